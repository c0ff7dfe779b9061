"""`pocket serve --http` as an OAuth 2.1 resource server, as the MCP authorization specification asks.

- Protected resource metadata (RFC 9728) at `/.well-known/oauth-protected-resource` and at its path-suffixed
  form (`.../oauth-protected-resource/mcp`): the resource URI, the trusted authorization servers, the scopes.
- A request to the MCP endpoint without a valid access token gets 401 with `WWW-Authenticate: Bearer
  resource_metadata="..."` (how clients discover where to log in); one whose token lacks a required scope
  gets 403 `insufficient_scope` naming it.
- JWT access tokens are checked with joserfc (authlib's JOSE library): the signature by the issuer's JWKS
  (found through its RFC 8414 / OIDC metadata, cached, fetched again when a token names a key it does not
  hold: rotation), `iss` one of the trusted issuers, `aud` this server's resource URI (RFC 8707), `exp`/`nbf`.
  Opaque tokens are checked by RFC 7662 introspection at the issuer, with the same audience rule.
- The token's user claim is the user of every call on that request (`Caller`, in `scope["user"]`, the MCP
  SDK's `AuthenticatedUser`, so its session-owner checks apply too): credentials never cross users.

Tokens never appear in logs, errors or reprs: a refusal says what was wrong with the token, not what it was.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from joserfc import jwt
from joserfc.errors import BadSignatureError, ExpiredTokenError, InvalidClaimError, InvalidKeyIdError, JoseError
from joserfc.errors import MissingClaimError as MissingJwtClaim
from joserfc.jwk import KeySet
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.authentication import AuthCredentials

from runner.auth.oauth import metadata_urls, split_scopes
from runner.settings import ServerSettings

__all__ = ["Caller", "Refusal", "ResourceServer", "TokenValidator", "caller_of", "canonical_resource"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

WELL_KNOWN = "/.well-known/oauth-protected-resource"
# Signatures by the authorization server's private key only: never `none`, never a shared-secret HMAC.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
KEYS_REFETCH_AFTER = 5.0  # seconds: an unknown `kid` fetches the JWKS again, at most this often per issuer
_METADATA_TTL = 3600.0  # seconds an issuer's metadata and keys are kept before being fetched again
# What RFC 6750 (section 3) allows in a challenge's quoted values; anything else (a token's own text) is replaced.
_OUTSIDE_QUOTED = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_SHOWN = 40  # characters of a token's own value (its `alg`) quoted in a refusal
_SKEW_HINT = (
    " by this server's clock: if its clock and the authorization server's differ, set [server] clock_skew_seconds"
)


class Refusal(Exception):
    """A request the resource server turns away: 401 (no token, or not a valid one) or 403 (a scope missing).
    The message says what was wrong, never the token."""

    def __init__(self, description: str, *, status: int = 401, error: str | None = "invalid_token", scope: str = ""):
        super().__init__(description)
        self.description = description
        self.status = status
        self.error = error
        self.scope = scope

    def challenge(self, metadata_url: str) -> str:
        """The `WWW-Authenticate` value (RFC 6750 section 3, RFC 9728 section 5.1)."""
        params = {"error": self.error, "error_description": self.description if self.error else None}
        params |= {"scope": self.scope or None, "resource_metadata": metadata_url}
        quoted = (f'{name}="{_OUTSIDE_QUOTED.sub("?", value)}"' for name, value in params.items() if value)
        return "Bearer " + ", ".join(quoted)


class Caller(AuthenticatedUser):
    """Who made a request: the user its calls run as, and the token's client, issuer and scopes."""

    def __init__(self, user_id: str, access_token: AccessToken):
        super().__init__(access_token)
        self.user_id = user_id

    def __repr__(self) -> str:
        return f"Caller(user_id={self.user_id!r}, client_id={self.access_token.client_id!r})"


def caller_of(request: Any) -> Caller | None:
    """The authenticated caller of an HTTP request (a Starlette request), or None (stdio, no authentication)."""
    user = getattr(request, "scope", {}).get("user")
    return user if isinstance(user, Caller) else None


def canonical_resource(url: str) -> str:
    """The canonical form of a resource URI (MCP authorization, RFC 8707): scheme and host in lower case, no
    trailing slash, no default port."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host
    default = {"https": 443, "http": 80}.get(scheme)
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{scheme}://{host}{port}{parts.path.rstrip('/')}"


def _segment(token: str, index: int, what: str = "access token") -> dict[str, Any]:
    """A JWT's header (0) or claims (1), read before verification only to pick the issuer and the key."""
    try:
        part = token.split(".")[index]
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, UnicodeDecodeError):
        raise Refusal(f"the {what} is not a well-formed JWT") from None
    if not isinstance(value, dict):
        raise Refusal(f"the {what} is not a well-formed JWT")
    return value


@dataclass
class TrustedIssuer:
    """One authorization server: its metadata (RFC 8414, then OpenID discovery) and its signing keys, cached."""

    issuer: str
    http: httpx.AsyncClient
    _metadata: dict[str, Any] = field(default_factory=dict)
    _keys: KeySet | None = None
    _fetched_at: float = 0.0
    _keys_at: float = 0.0
    _lock: anyio.Lock = field(default_factory=anyio.Lock)

    async def metadata(self) -> dict[str, Any]:
        if self._metadata and time.monotonic() - self._fetched_at < _METADATA_TTL:
            return self._metadata
        found: dict[str, Any] = {}
        named: set[str] = set()  # issuers other than ours that its metadata names: a setting written differently
        for url in reversed(metadata_urls(self.issuer)):  # RFC 8414's first, OIDC's completing it
            try:
                response = await self.http.get(url, headers={"Accept": "application/json"})
                document = response.json() if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                continue
            if isinstance(document, dict) and document.get("issuer") == self.issuer:  # RFC 8414 section 3.3
                found = {**document, **found}
            elif isinstance(document, dict) and isinstance(document.get("issuer"), str):
                named.add(document["issuer"])
        if not found and named:
            raise Refusal(
                f"the authorization server {self.issuer} names itself {sorted(named)[0]!r:.200} in its metadata: "
                "[server] issuers must name it exactly so",
                status=503,
                error=None,
            )
        if not found:
            raise Refusal(
                f"the authorization server {self.issuer} cannot be reached to check the token", status=503, error=None
            )
        self._metadata, self._fetched_at = found, time.monotonic()
        return found

    async def keys(self, *, unknown_kid: bool = False) -> KeySet:
        """The issuer's key set; fetched again when a token names a key not in it (keys rotated), at most
        every `KEYS_REFETCH_AFTER` seconds, so tokens with made-up key ids cannot flood the issuer."""
        async with self._lock:
            stale = time.monotonic() - self._keys_at > (KEYS_REFETCH_AFTER if unknown_kid else _METADATA_TTL)
            if self._keys is None or stale:
                jwks_uri = (await self.metadata()).get("jwks_uri")
                if not jwks_uri:
                    raise Refusal(
                        f"the authorization server {self.issuer} publishes no jwks_uri", status=503, error=None
                    )
                try:
                    response = await self.http.get(jwks_uri, headers={"Accept": "application/json"})
                    response.raise_for_status()
                    self._keys = KeySet.import_key_set(response.json())
                except (httpx.HTTPError, ValueError, JoseError):
                    if self._keys is None:
                        raise Refusal(
                            f"cannot fetch the signing keys of {self.issuer}", status=503, error=None
                        ) from None
                self._keys_at = time.monotonic()
            assert self._keys is not None
            return self._keys

    async def verify(self, token: str, *, leeway: int, what: str, **claims: Any) -> dict[str, Any]:
        """The claims of a JWT this issuer signed (`iss` its own, `exp` not passed, and the values `claims`
        asks for, such as an ID token's `aud` and `nonce`), or Refusal saying what is wrong with the `what`."""
        algorithm = _segment(token, 0, what).get("alg")
        if algorithm not in ALGORITHMS:
            raise Refusal(f"the {what}'s signature algorithm {algorithm!r:.{_SHOWN}} is not accepted")
        try:
            try:
                verified = jwt.decode(token, await self.keys(), algorithms=ALGORITHMS)
            except InvalidKeyIdError:  # signed with a key published since: rotation
                verified = jwt.decode(token, await self.keys(unknown_kid=True), algorithms=ALGORITHMS)
            expected = {name: {"essential": True, "value": value} for name, value in claims.items()}
            jwt.JWTClaimsRegistry(
                leeway=leeway, iss={"essential": True, "value": self.issuer}, exp={"essential": True}, **expected
            ).validate(verified.claims)
        except InvalidKeyIdError:
            raise Refusal(f"the {what} is signed with a key its issuer does not publish") from None
        except BadSignatureError:
            raise Refusal(f"the {what}'s signature does not verify") from None
        except ExpiredTokenError:
            raise Refusal(f"the {what} has expired") from None
        except (InvalidClaimError, MissingJwtClaim) as exc:
            if isinstance(exc, InvalidClaimError) and exc.claim in ("iat", "nbf"):  # a clock ahead of ours
                said = "was issued in the future" if exc.claim == "iat" else "is not yet valid"
                raise Refusal(f"the {what} {said} (its {exc.claim}){_SKEW_HINT}") from None
            raise Refusal(f"the {what}'s claims are not valid ({exc.description or exc.error})") from None
        except (JoseError, ValueError):
            raise Refusal(f"the {what} cannot be verified") from None
        return verified.claims


class TokenValidator:
    """Checks access tokens for the resource `resource`, issued by one of `settings.issuers`."""

    def __init__(self, settings: ServerSettings, resource: str, http: httpx.AsyncClient):
        self._settings = settings
        self.resource = canonical_resource(resource)
        self._http = http
        self._issuers = {issuer: TrustedIssuer(issuer, http) for issuer in settings.issuers}

    async def validate(self, token: str) -> Caller:
        """The caller the token names, or Refusal saying why it is not accepted."""
        claims = await (self._jwt(token) if token.count(".") == 2 else self._introspect(token))
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences or []
        if not any(isinstance(a, str) and canonical_resource(a) == self.resource for a in audiences):
            raise Refusal(f"the access token was not issued for this server ({self.resource})")
        scopes = claims.get("scope", claims.get("scp", ""))
        scopes = list(split_scopes(scopes) if isinstance(scopes, str) else scopes)
        for required in self._settings.required_scopes:
            if required not in scopes:
                raise Refusal(
                    f"the access token lacks the scope {required}",
                    status=403,
                    error="insufficient_scope",
                    scope=" ".join(self._settings.required_scopes),
                )
        user = claims.get(self._settings.user_claim)
        if not isinstance(user, str) or not user:
            raise Refusal(f"the access token names no user (its {self._settings.user_claim!r} claim)")
        issuer = str(claims.get("iss", ""))
        user_id = f"{issuer}|{user}" if len(self._issuers) > 1 else user
        client_id = str(claims.get("client_id") or claims.get("azp") or "")
        expires = claims.get("exp")
        access = AccessToken(
            token="[redacted]",  # noqa: S106 - the SDK model shows it in its repr: the bearer token is not kept
            client_id=client_id,
            scopes=scopes,
            expires_at=int(expires) if isinstance(expires, int | float) else None,
            resource=self.resource,
            subject=str(claims.get("sub", user)),
            claims={"iss": issuer},
        )
        return Caller(user_id, access)

    async def _jwt(self, token: str) -> dict[str, Any]:
        named = _segment(token, 1).get("iss")
        trusted = self.issuer(named)
        if trusted is None:
            raise Refusal(self._untrusted(named))
        return await trusted.verify(token, leeway=self._settings.clock_skew_seconds, what="access token")

    def _untrusted(self, named: Any) -> str:
        """Why a token's issuer is refused; a trusted one written differently (a trailing slash) is a setting
        to correct, and is named."""
        near = [url for url in self._issuers if isinstance(named, str) and url.rstrip("/") == named.rstrip("/")]
        if near:
            return (
                f"the access token's issuer is {named!r} but [server] issuers has {near[0]!r}: "
                "they must match exactly (RFC 8414), correct the setting"
            )
        return "the access token was issued by an authorization server this server does not trust"

    def issuer(self, url: Any) -> TrustedIssuer | None:
        """The trusted authorization server of that issuer URL, if it is one."""
        return self._issuers.get(url) if isinstance(url, str) else None

    async def _introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: ask each trusted issuer that offers introspection until one knows the token as active."""
        settings = self._settings
        if not settings.introspection_client_id or settings.introspection_client_secret is None:
            raise Refusal("opaque access tokens are not accepted (no [server] introspection client is configured)")
        auth = (settings.introspection_client_id, settings.introspection_client_secret.get_secret_value())
        for trusted in self._issuers.values():
            endpoint = (await trusted.metadata()).get("introspection_endpoint")
            if not endpoint:
                continue
            try:
                response = await self._http.post(
                    endpoint, data={"token": token, "token_type_hint": "access_token"}, auth=auth
                )
                answer = response.json() if response.status_code == 200 else {}
            except (httpx.HTTPError, ValueError):
                raise Refusal(
                    f"the authorization server {trusted.issuer} cannot be reached", status=503, error=None
                ) from None
            if not isinstance(answer, dict) or answer.get("active") is not True:
                continue
            if answer.get("iss", trusted.issuer) != trusted.issuer:
                continue
            expires = answer.get("exp")
            leeway = settings.clock_skew_seconds
            if isinstance(expires, int | float) and expires + leeway < time.time():
                raise Refusal("the access token has expired")
            return {"iss": trusted.issuer, **answer}
        raise Refusal("the access token is not active")


@dataclass
class ResourceServer:
    """ASGI middleware: the metadata routes, and the token check in front of `guarded` (the MCP endpoint).
    Everything else (the consent pages a browser opens) passes through unauthenticated."""

    app: ASGIApp
    validator: TokenValidator
    settings: ServerSettings
    guarded: str = "/mcp"
    http: httpx.AsyncClient | None = None  # the validator's client, closed when the server shuts down

    @property
    def metadata_url(self) -> str:
        parts = urlsplit(self.validator.resource)
        return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{parts.path}"

    def metadata(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "resource": self.validator.resource,
            "authorization_servers": list(self.settings.issuers),
            "bearer_methods_supported": ["header"],
            "resource_name": "pocket-runner",
        }
        if self.settings.required_scopes:
            document["scopes_supported"] = list(self.settings.required_scopes)
        return document

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].rstrip("/") or "/"
        if path in (WELL_KNOWN, WELL_KNOWN + urlsplit(self.validator.resource).path, WELL_KNOWN + self.guarded):
            await _respond(send, 200, self.metadata(), [(b"access-control-allow-origin", b"*")])
        elif path == self.guarded or path.startswith(self.guarded + "/"):
            try:
                caller = await self.validator.validate(_bearer(scope))
            except Refusal as refusal:
                if refusal.status == 401 and not refusal.scope:  # which scopes to ask for (MCP authorization)
                    refusal.scope = " ".join(self.settings.required_scopes)
                challenge = [(b"www-authenticate", refusal.challenge(self.metadata_url).encode())]
                error = refusal.error or ("temporarily_unavailable" if refusal.status == 503 else "unauthorized")
                body = {"error": error, "error_description": refusal.description}
                await _respond(send, refusal.status, body, challenge)
                return
            scope["user"], scope["auth"] = caller, AuthCredentials(caller.scopes)
            await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _closing(self, send: Any) -> Callable[[Any], Awaitable[None]]:
        """`send` of the lifespan, closing `http` before the server is told shutdown is complete."""

        async def sending(message: Any) -> None:
            if message["type"] == "lifespan.shutdown.complete" and self.http is not None:
                await self.http.aclose()
            await send(message)

        return sending


def _bearer(scope: Scope) -> str:
    values = [value for name, value in scope.get("headers", []) if name.lower() == b"authorization"]
    if not values:
        raise Refusal("this server needs an access token: log in and send it as a Bearer token", error=None)
    kind, _, token = values[0].decode("latin-1").partition(" ")
    if len(values) > 1 or kind.lower() != "bearer" or not token.strip():
        raise Refusal("the Authorization header must be one `Bearer TOKEN`", error="invalid_request", status=400)
    return token.strip()


async def _respond(send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    head += [(b"cache-control", b"no-store"), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": payload})
