"""OAuth 2.0 as a client: authorization code with PKCE, refresh, revocation, device grant, discovery.

Driven with httpx directly, so every rule of RFC 6749/7636/7009/8414/8628/9700 is visible here:
PKCE S256 on every code flow the provider accepts, a random single-use state bound to its pending
request, the exact redirect URI repeated in the token request, token errors surfaced even when they
come with HTTP 200 (GitHub, Slack), tokens never in URLs, logs or messages.

`OAuthHandler` is the extension point for providers that need code: a class named by `handler_class`
in the catalog or in settings (`[auth.NAME] handler_class = "package.module:Class"`) replaces the
default `OAuth2Handler` for that provider, without touching the runner.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit

import httpx
from pydantic import SecretStr

from runner.auth.providers import Provider
from runner.auth.store import Credential
from runner.errors import AuthUnavailableError, OAuthError, SettingsError
from runner.redaction import Redactor

STATE_TTL_SECONDS = 600.0
# Request fields that carry a secret, scrubbed from any error text the server sends back.
_SECRET_FIELDS = frozenset({"code", "code_verifier", "refresh_token", "client_secret", "token", "device_code"})


@dataclass(frozen=True)
class Client:
    """Client credentials of the registered application; the secret is a SecretStr."""

    client_id: str
    client_secret: SecretStr | None = None

    def __repr__(self) -> str:
        return f"Client(client_id={self.client_id!r})"


@dataclass
class Pending:
    """One authorization in progress: what the state is bound to. Single use, short-lived."""

    state: str
    user_id: str
    provider: str
    kind: str
    scopes: tuple[str, ...]
    redirect_uri: str
    code_verifier: str | None = None
    created_at: float = field(default_factory=time.time)
    ttl: float = STATE_TTL_SECONDS
    url: str = ""
    user_code: str | None = None  # device grant: the code the person enters at `url`

    @property
    def expired(self) -> bool:
        return time.time() > self.created_at + self.ttl

    def __repr__(self) -> str:
        return (
            f"Pending(user_id={self.user_id!r}, provider={self.provider!r}, kind={self.kind!r}, scopes={self.scopes!r})"
        )


@dataclass(frozen=True)
class TokenSet:
    """What a token endpoint returned, already parsed with the provider's paths."""

    access_token: SecretStr
    refresh_token: SecretStr | None
    expires_in: float | None
    scopes: tuple[str, ...] | None  # None when the response did not say
    extra: dict[str, str]

    def __repr__(self) -> str:
        refresh = self.refresh_token is not None
        return f"TokenSet(scopes={self.scopes!r}, expires_in={self.expires_in!r}, refresh={refresh})"


# The tokens a credential may hold, as a person reads them, in the order RFC 7009 revocation goes.
_TOKENS = (("refresh_token", "refresh token"), ("token", "access token"))


@dataclass(frozen=True)
class Revocation:
    """What revoking a credential at its provider did, token by token. A token not revoked may still work at
    the provider until it expires: `pocket auth logout` says so rather than claim that it is gone."""

    revoked: tuple[str, ...] = ()  # "refresh token", "access token"
    not_revoked: dict[str, str] = field(default_factory=dict)  # token -> why not

    @classmethod
    def refused(cls, credential: Credential, why: str) -> Revocation:
        """Every token the credential holds, none revoked, for one reason."""
        return cls(not_revoked={label: why for name, label in _TOKENS if credential.value(name)})

    @property
    def complete(self) -> bool:
        return bool(self.revoked) and not self.not_revoked


@dataclass(frozen=True)
class DeviceAuthorization:
    """RFC 8628 device authorization response: what to show the person and how to poll."""

    provider: str
    user_id: str
    scopes: tuple[str, ...]
    device_code: SecretStr
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_at: float
    interval: float

    def __repr__(self) -> str:
        return f"DeviceAuthorization(provider={self.provider!r}, verification_uri={self.verification_uri!r})"


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge): 64 URL-safe characters, 384 bits of entropy."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return verifier, challenge


def new_state() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


def dig(document: Any, path: str) -> Any:
    """The value at a dotted path ("authed_user.access_token"), or None."""
    for part in path.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


def split_scopes(text: Any) -> tuple[str, ...]:
    if isinstance(text, list | tuple):
        return tuple(str(s) for s in text)
    if not isinstance(text, str):
        return ()
    return tuple(s for s in text.replace(",", " ").split() if s)


class OAuthHandler(Protocol):
    """What the runner needs from a provider's OAuth implementation (the extension point)."""

    def authorization_url(self, pending: Pending, code_challenge: str | None) -> str: ...

    def exchange_code(self, code: str, pending: Pending) -> TokenSet: ...

    def refresh(self, credential: Credential) -> TokenSet: ...

    def revoke(self, credential: Credential) -> Revocation: ...


class OAuth2Handler:
    """The standard behaviour, steered by the catalog entry's fields."""

    def __init__(self, provider: Provider, client: Client, http: httpx.Client):
        self.provider = provider
        self.client = client
        self.http = http

    # -- authorization request -------------------------------------------------------------------

    def authorization_url(self, pending: Pending, code_challenge: str | None) -> str:
        p = self.provider
        if not p.authorization_url:
            raise SettingsError(f"provider {p.name!r} has no authorization_url")
        params = {
            **p.authorization_params,
            "response_type": "code",
            "client_id": self.client.client_id,
            "redirect_uri": pending.redirect_uri,
            "state": pending.state,
        }
        scopes = list(dict.fromkeys([*p.default_scopes, *pending.scopes]))
        if p.scope_param != "scope" and p.default_scopes:
            # Slack: protocol scopes stay in `scope`, the person's scopes go in `user_scope`.
            params["scope"] = p.scope_separator.join(p.default_scopes)
            scopes = list(pending.scopes)
        if scopes:
            params[p.scope_param] = p.scope_separator.join(scopes)
        if code_challenge:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        separator = "&" if urlsplit(p.authorization_url).query else "?"
        return p.authorization_url + separator + urlencode(params, quote_via=quote)

    # -- token endpoint --------------------------------------------------------------------------

    def _token_request(self, url: str, data: dict[str, str]) -> dict[str, Any]:
        return self._parse(self._post(url, data), self._redactor(data))

    def _redactor(self, data: dict[str, str]) -> Redactor:
        """Hides every form in which a request to the server carries a secret. A server may echo what it was
        sent (a refresh token, the client's `Authorization: Basic` header, a form body) in its error text."""
        sent = [v for k, v in data.items() if k in _SECRET_FIELDS]
        if self.client.client_secret is not None:
            client_id, secret = self.client.client_id, self.client.client_secret.get_secret_value()
            sent.append(secret)
            for pair in (f"{client_id}:{secret}", f"{quote(client_id, safe='')}:{quote(secret, safe='')}"):
                sent.append(base64.b64encode(pair.encode()).decode())
        return Redactor.of(form for value in sent for form in (value, quote(value, safe=""), quote_plus(value)))

    def _post(self, url: str, data: dict[str, str]) -> httpx.Response:
        """POST to a token-like endpoint (token, revocation, device) with the client's authentication."""
        p = self.provider
        headers = {"Accept": "application/json"}
        auth = None
        if p.token_request_auth_method == "client_secret_basic" and self.client.client_secret is not None:
            # RFC 6749 2.3.1: both parts form-encoded before the Basic encoding.
            auth = httpx.BasicAuth(
                quote(self.client.client_id, safe=""), quote(self.client.client_secret.get_secret_value(), safe="")
            )
        else:
            data = {**data, "client_id": self.client.client_id}
            if p.token_request_auth_method == "client_secret_post" and self.client.client_secret is not None:
                data["client_secret"] = self.client.client_secret.get_secret_value()
        try:
            if p.token_request_format == "json":
                return self.http.post(url, json=data, headers=headers, auth=auth)
            return self.http.post(url, data=data, headers=headers, auth=auth)
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        # Raised outside the except block: the httpx error (whose request holds the body) is not chained.
        raise OAuthError(p.name, "unreachable", f"cannot reach the token endpoint: {problem}")

    def _parse(self, response: httpx.Response, redact: Redactor) -> dict[str, Any]:
        """The response's JSON (or form) document, or the server's error as an OAuthError with every secret
        the request carried hidden by `redact` before the text is cut to length."""
        name = self.provider.name
        content_type = response.headers.get("content-type", "")
        payload: Any
        try:
            if "json" in content_type:
                payload = response.json()
            elif "x-www-form-urlencoded" in content_type or ("text/plain" in content_type and "=" in response.text):
                payload = dict(parse_qsl(response.text))  # GitHub without Accept: application/json
            else:
                payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise OAuthError(
                name, "invalid_response", f"HTTP {response.status_code}, {content_type or 'no content type'}",
                status=response.status_code,
            )  # fmt: skip
        if self.provider.ok_field and payload.get(self.provider.ok_field) is False:
            error = redact(str(payload.get("error") or "error"))
            raise OAuthError(name, error, None, status=response.status_code)
        if payload.get("error"):
            error = payload["error"]
            if isinstance(error, dict):  # {"error": {"code": ..., "message": ...}}
                error, description = error.get("code") or error.get("status") or "error", error.get("message")
            else:
                description = payload.get("error_description")
            described = redact(str(description)) if description else None
            raise OAuthError(name, redact(str(error)), described, status=response.status_code)
        if response.status_code >= 400:
            raise OAuthError(name, f"http_{response.status_code}", None, status=response.status_code)
        return payload

    def _token_set(self, payload: dict[str, Any], *, refresh: bool) -> TokenSet:
        p = self.provider
        paths = (
            (p.refresh_access_token_path, p.refresh_refresh_token_path, p.refresh_expires_in_path, p.refresh_scope_path)
            if refresh
            else (p.access_token_path, p.refresh_token_path, p.expires_in_path, p.scope_path)
        )
        access, refresh_token, expires_in, scope = (dig(payload, path) for path in paths)
        if not isinstance(access, str) or not access:
            raise OAuthError(p.name, "invalid_response", "the token response carries no access token")
        try:
            expires = float(expires_in) if expires_in not in (None, "", 0, "0") else None
        except (TypeError, ValueError):
            expires = None
        extra = {}
        for path in p.extra_fields:
            value = dig(payload, path)
            if isinstance(value, str | int | float | bool):
                extra[path] = str(value)
        return TokenSet(
            access_token=SecretStr(access),
            refresh_token=SecretStr(refresh_token) if isinstance(refresh_token, str) and refresh_token else None,
            expires_in=expires,
            scopes=split_scopes(scope) if scope is not None else None,
            extra=extra,
        )

    def exchange_code(self, code: str, pending: Pending) -> TokenSet:
        data = {
            **self.provider.token_params,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
        }
        if pending.code_verifier:
            data["code_verifier"] = pending.code_verifier
        assert self.provider.token_url
        return self._token_set(self._token_request(self.provider.token_url, data), refresh=False)

    def refresh(self, credential: Credential) -> TokenSet:
        refresh_token = credential.value("refresh_token")
        if not refresh_token or not self.provider.token_url:
            raise OAuthError(self.provider.name, "invalid_grant", "no refresh token")
        data = {**self.provider.refresh_params, "grant_type": "refresh_token", "refresh_token": refresh_token}
        return self._token_set(self._token_request(self.provider.token_url, data), refresh=True)

    # -- revocation ------------------------------------------------------------------------------

    def revoke(self, credential: Credential) -> Revocation:
        """Revoke each token at the provider where it can. Each is tried on its own: a server refusing one
        (`unsupported_token_type` is a legitimate RFC 7009 answer for a refresh token) keeps no other alive."""
        p = self.provider
        if p.revocation_method == "none" or not p.revocation_url:
            return Revocation.refused(credential, "the provider offers no revocation")
        if p.revocation_method == "github":
            return self._revoke_github_grant(credential, p.revocation_url)
        # RFC 7009: the refresh token first (revoking it revokes the grant on most servers). Slack's
        # auth.revoke takes the access token only.
        names = _TOKENS if p.revocation_method != "slack" else _TOKENS[1:]
        revoked, not_revoked = [], {}
        for name, label in names:
            token = credential.value(name)
            if token:
                problem = self._revoke_token(p.revocation_url, token, hint=label.replace(" ", "_"))
                if problem is None:
                    revoked.append(label)
                else:
                    not_revoked[label] = problem
        return Revocation(tuple(revoked), not_revoked)

    def _revoke_token(self, url: str, token: str, *, hint: str) -> str | None:
        """Revoke one token (RFC 7009, or Slack's auth.revoke). None once revoked, else why not."""
        try:
            if self.provider.revocation_method == "slack":
                response = self.http.post(url, headers={"Authorization": f"Bearer {token}"})
                answer = response.json()
                if response.status_code == 200 and isinstance(answer, dict) and answer.get("ok") is True:
                    return None
                error = answer.get("error") if isinstance(answer, dict) else None
                return self._redactor({"token": token})(str(error or f"HTTP {response.status_code}"))
            response = self._post(url, {"token": token, "token_type_hint": hint})
            if response.status_code == 200:  # revoked, or unknown to the server, which is as good
                return None
            self._parse(response, self._redactor({"token": token}))  # raises the server's error
            return f"HTTP {response.status_code}"
        except OAuthError as exc:
            return exc.error + (f" ({exc.description})" if exc.description else "")
        except (httpx.HTTPError, ValueError) as exc:
            return f"the provider could not be asked: {type(exc).__name__}"

    def _revoke_github_grant(self, credential: Credential, url: str) -> Revocation:
        """GitHub deletes the whole grant, every token of it, given the access token and the client's Basic auth."""
        if self.client.client_secret is None:
            return Revocation.refused(credential, "GitHub needs the client secret to revoke")
        try:
            response = self.http.request(
                "DELETE",
                url.replace("{client_id}", quote(self.client.client_id, safe="")),
                json={"access_token": credential.value("token")},
                auth=(self.client.client_id, self.client.client_secret.get_secret_value()),
                headers={"Accept": "application/vnd.github+json"},
            )
        except httpx.HTTPError as exc:
            return Revocation.refused(credential, f"the provider could not be asked: {type(exc).__name__}")
        if response.status_code not in (204, 404):  # 404: the grant is gone already
            return Revocation.refused(credential, f"HTTP {response.status_code}")
        return Revocation(tuple(label for name, label in _TOKENS if credential.value(name)))

    # -- device authorization grant (RFC 8628) --------------------------------------------------

    def start_device(self, user_id: str, scopes: tuple[str, ...]) -> DeviceAuthorization:
        p = self.provider
        if not p.device_authorization_url:
            raise SettingsError(f"provider {p.name!r} does not offer the device authorization grant")
        all_scopes = list(dict.fromkeys([*p.default_scopes, *scopes]))
        data = {"scope": p.scope_separator.join(all_scopes)} if all_scopes else {}
        payload = self._token_request(p.device_authorization_url, data)
        try:
            return DeviceAuthorization(
                provider=p.name,
                user_id=user_id,
                scopes=scopes,
                device_code=SecretStr(str(payload["device_code"])),
                user_code=str(payload["user_code"]),
                verification_uri=str(payload.get("verification_uri") or payload["verification_url"]),
                verification_uri_complete=payload.get("verification_uri_complete"),
                expires_at=time.time() + _seconds(payload.get("expires_in"), default=600, ceiling=3600),
                interval=_seconds(payload.get("interval"), default=5, ceiling=60),
            )
        except KeyError as exc:
            raise OAuthError(p.name, "invalid_response", f"device authorization response lacks {exc}") from None

    def poll_device(self, device: DeviceAuthorization, *, sleep: Any = time.sleep) -> TokenSet:
        """Poll the token endpoint every `interval` seconds (+5 s on slow_down) until the person decides."""
        assert self.provider.token_url
        interval = device.interval
        data = {
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": device.device_code.get_secret_value(),
        }
        while True:
            if time.time() > device.expires_at:
                raise OAuthError(self.provider.name, "expired_token", "the device code expired before approval")
            sleep(interval)
            try:
                return self._token_set(self._token_request(self.provider.token_url, data), refresh=False)
            except OAuthError as exc:
                if exc.error == "authorization_pending":
                    continue
                if exc.error == "slow_down":
                    interval += 5
                    continue
                raise


def _seconds(value: Any, *, default: float, ceiling: float) -> float:
    """A duration the server gave, in seconds: `default` when it is missing, not a number or under one second
    (a negative polling interval would be a busy loop), and at most `ceiling` (an absurd one, never a poll)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return default
    return min(seconds, ceiling) if math.isfinite(seconds) and seconds >= 1 else default


def load_handler_class(spec: str) -> type:
    module_name, _, attribute = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise SettingsError(f"handler_class {spec!r} cannot be loaded: {exc}") from None


HANDLER_ENTRY_POINTS = "pocket_runner.auth_handlers"


def make_handler(provider: Provider, client: Client, http: httpx.Client) -> OAuthHandler:
    """The provider's OAuth implementation: `handler_class` from the catalog or settings, else a class an
    installed package registers under the entry point group `pocket_runner.auth_handlers` with the
    provider's name, else the standard `OAuth2Handler`. Each is called as `cls(provider, client, http)`."""
    if provider.handler_class:
        return load_handler_class(provider.handler_class)(provider, client, http)
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=HANDLER_ENTRY_POINTS, name=provider.name):
        return entry_point.load()(provider, client, http)
    return OAuth2Handler(provider, client, http)


# -- discovery ---------------------------------------------------------------------------------


def metadata_urls(issuer: str) -> list[str]:
    """OIDC discovery first, then RFC 8414 (well-known segment inserted before the issuer's path)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    origin = f"{parts.scheme}://{parts.netloc}"
    return [
        f"{origin}{path}/.well-known/openid-configuration",
        f"{origin}/.well-known/oauth-authorization-server{path}",
    ]


def fetch_metadata(provider: Provider, http: httpx.Client) -> dict[str, Any]:
    """The issuer's authorization server metadata: its OpenID discovery document and its RFC 8414 document,
    the first found completed by the other (an OpenID document often lacks `revocation_endpoint` that the
    RFC 8414 one has). A document naming another issuer is refused (SettingsError); a server that cannot be
    reached or answers 5xx is AuthUnavailableError (a later try may succeed)."""
    issuer = provider.issuer
    assert issuer
    if urlsplit(issuer).scheme != "https" and urlsplit(issuer).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SettingsError(f"provider {provider.name!r}: issuer {issuer!r} must be an https URL")
    last_problem = "no metadata found"
    unreachable = True  # every document failed for want of a working server, not for what it said
    found: dict[str, Any] = {}
    for url in metadata_urls(issuer):
        try:
            response = http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            last_problem = f"{url}: {type(exc).__name__}"
            continue
        if response.status_code != 200:
            last_problem = f"{url}: HTTP {response.status_code}"
            unreachable = unreachable and response.status_code >= 500
            continue
        unreachable = False
        try:
            metadata = response.json()
        except ValueError:
            metadata = None
        if not isinstance(metadata, dict):
            last_problem = f"{url}: not a JSON object"
            continue
        if metadata.get("issuer") != issuer:
            raise SettingsError(
                f"provider {provider.name!r}: the metadata at {url} names issuer {metadata.get('issuer')!r}, "
                f"not {issuer!r}; refusing it (RFC 8414 section 3.3)"
            )
        found = {**metadata, **found}  # the first document's values win; the other fills what it lacks
    if found:
        return found
    message = f"provider {provider.name!r}: cannot discover the metadata of {issuer}: {last_problem}"
    if unreachable:
        raise AuthUnavailableError(message + "; try again once it is reachable", provider=provider.name)
    raise SettingsError(message)


def apply_metadata(provider: Provider, metadata: dict[str, Any]) -> Provider:
    """The provider with the endpoints its settings leave out taken from its issuer's metadata."""
    methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    changes: dict[str, Any] = {
        "authorization_url": provider.authorization_url or metadata.get("authorization_endpoint"),
        "token_url": provider.token_url or metadata.get("token_endpoint"),
        "revocation_url": provider.revocation_url or metadata.get("revocation_endpoint"),
        "device_authorization_url": provider.device_authorization_url or metadata.get("device_authorization_endpoint"),
        "iss_required": provider.iss_required or metadata.get("authorization_response_iss_parameter_supported") is True,
    }
    if "client_secret_post" not in methods and "client_secret_basic" in methods:
        changes["token_request_auth_method"] = "client_secret_basic"
    return provider.model_copy(update=changes)
