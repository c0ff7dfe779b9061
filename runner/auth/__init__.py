"""Credentials for tools: consent, encrypted storage, refresh, and the variables a tool receives.

`Authenticator` is what `Pocket` and the CLI use:
- `environment(spec, user_id)` -> the variables of one tool call (`SLACK_BOT_TOKEN`, ...), refreshing
  ahead of expiry; raises `AuthRequiredError` carrying the URL the person must open when the user has
  no usable credential (an OAuth authorization URL, or the local form to paste a token), and
  `AuthUnavailableError` when an expired token cannot be refreshed now (the provider is down).
- `secret_values(spec, environment)`: which of those values to mask in the tool's result (a token is,
  a username is not).
- `require_scopes(provider, scopes)`: the scopes the loaded tools need; consent asks for their union.
- `initialize(specs, user_id)`, `authorization_url(...)`, `wait(...)`: start consent and wait for the
  callbacks (hyperpocket's `initialize_tool_auth` / `wait_tool_auth`).
- `login_with(...)`, `status(...)`, `logout(...)`, `start_device(...)` / `finish_device(...)`: the
  `pocket auth` commands.

Modules: `providers` (the catalog, as data in providers.toml), `oauth` (the protocol), `store`
(encrypted SQLite), `callback` (the loopback server and its pages). The secret values a tool prints
(`secret_values`) are masked in its result by `runner.invocation.redact`, where Pocket builds every result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr

from runner.auth.callback import CallbackServer, Page, token_form
from runner.auth.oauth import (
    Client,
    DeviceAuthorization,
    OAuth2Handler,
    OAuthHandler,
    Pending,
    Revocation,
    TokenSet,
    discover,
    make_handler,
    new_state,
    pkce_pair,
)
from runner.auth.providers import FORM_FIELDS, Provider, resolve, token_variables, unknown_provider
from runner.auth.store import ACTIVE, EXPIRED, Credential, CredentialStore, describe
from runner.errors import AuthRequiredError, AuthUnavailableError, OAuthError, SettingsError, UnreadableCredential
from runner.manifest import AuthSpec
from runner.settings import Settings

__all__ = [
    "AuthRequiredError",
    "AuthUnavailableError",
    "Authenticator",
    "Credential",
    "OAuth2Handler",
    "OAuthError",
    "OAuthHandler",
    "Pending",
    "Revocation",
    "TokenSet",
    "token_variables",
]

# Errors of a refresh that mean the grant is gone: the person has to consent again.
# Slack says invalid_refresh_token / token_revoked, GitHub bad_refresh_token, everyone else invalid_grant.
_GRANT_GONE = {
    "invalid_grant",
    "unauthorized_client",
    "invalid_client",
    "access_denied",
    "token_revoked",
    "invalid_refresh_token",
    "bad_refresh_token",
}


class Authenticator:
    """Resolves, obtains and keeps fresh the credentials of tool calls, per user."""

    def __init__(self, settings: Settings, *, http: httpx.Client | None = None):
        self._settings = settings
        self._config = settings.credentials
        self._http = http if http is not None else httpx.Client(timeout=30.0, follow_redirects=False)
        self._owns_http = http is None
        self._store: CredentialStore | None = None
        self._required: dict[str, set[str]] = {}
        self._providers: dict[str, Provider] = {}
        self._pending: dict[str, Pending] = {}
        self._outcomes: dict[tuple[str, str], tuple[bool, str]] = {}
        self._changed = threading.Condition()
        self._server: CallbackServer | None = None
        self._setup_lock = threading.Lock()
        self._closing = threading.Event()

    # -- configuration ---------------------------------------------------------------------------

    @property
    def store(self) -> CredentialStore:
        with self._setup_lock:
            if self._store is None:
                self._store = CredentialStore(self._settings.data_dir, self._config.encryption_key)
            return self._store

    def provider(self, name: str) -> Provider:
        """The catalog entry with settings applied, endpoints discovered when only an issuer is given."""
        with self._setup_lock:
            cached = self._providers.get(name)
        if cached is not None:
            return cached
        overrides = self._settings.auth.get(name)
        provider = resolve(name, overrides.model_dump() if overrides is not None else None)
        if provider is None:
            raise unknown_provider(name)
        if "oauth2" in provider.handlers and provider.issuer and not provider.is_oauth_ready:
            provider = discover(provider, self._http)
        with self._setup_lock:
            self._providers[name] = provider
        return provider

    def client(self, provider: Provider) -> Client | None:
        entry = self._settings.auth.get(provider.name)
        if entry is None or not entry.client_id:
            return None
        return Client(str(entry.client_id), entry.client_secret)

    def handler(self, provider: Provider) -> OAuthHandler:
        client = self.client(provider)
        if client is None:
            raise SettingsError(
                f"no OAuth client for {provider.title}: set [auth.{provider.name}] client_id and client_secret "
                f"in .secrets.toml (or POCKET_AUTH__{provider.name.upper()}__CLIENT_ID / __CLIENT_SECRET)"
            )
        return make_handler(provider, client, self._http)

    def require_scopes(self, provider: str, scopes: Iterable[str]) -> None:
        """Declare scopes a loaded tool needs; consent for `provider` asks for the union of all of them."""
        with self._setup_lock:
            self._required.setdefault(provider, set()).update(scopes)

    def required_scopes(self, provider: str) -> tuple[str, ...]:
        with self._setup_lock:
            return tuple(sorted(self._required.get(provider, ())))

    # -- the tool's variables ----------------------------------------------------------------------

    def environment(self, spec: AuthSpec, user_id: str = "default") -> dict[str, str]:
        """The variables the tool receives. Raises AuthRequiredError when the user must authorize first, and
        SettingsError when nothing the user could authorize would help (an unknown provider or handler)."""
        provider = self.provider(spec.provider)
        kind = provider.kind_of(spec.handler)
        static = self._static_values(provider, kind)
        if static is not None:
            return provider.environment(kind, static)
        credential = self.store.get(user_id, provider.name)
        if credential is not None and self._usable(credential, provider, spec, kind):
            credential = self._fresh(credential, provider)
            return provider.environment(credential.kind, credential.values())
        missing = ""
        if credential is not None and credential.status == ACTIVE and credential.kind == "oauth2":
            lacking = sorted(set(spec.scopes) - set(credential.scopes))
            if lacking:
                missing = f" (the stored grant lacks the scope{'s' if len(lacking) > 1 else ''} {', '.join(lacking)})"
        elif credential is not None and credential.status == EXPIRED:
            missing = " (the stored grant expired or was revoked)"
        self._raise_required(provider, kind, user_id, spec.scopes, missing)

    def secret_values(self, spec: AuthSpec, environment: Mapping[str, str]) -> list[str]:
        """The values of `environment` (what `environment(spec)` gave) to mask in the tool's result: every one
        but those made from no secret field, such as a username. A variable the templates of the spec's kind
        do not name is taken as secret."""
        provider = self.provider(spec.provider)
        plain = provider.plain_variables(provider.kind_of(spec.handler))
        return [value for variable, value in environment.items() if variable not in plain]

    def _usable(self, credential: Credential, provider: Provider, spec: AuthSpec, kind: str) -> bool:
        offered = set(provider.handlers) | ({"token"} if "oauth2" in provider.handlers else set())
        if credential.status != ACTIVE or credential.kind not in offered:
            return False
        # An OAuth token and a pasted token are interchangeable (same variable); basic and key pairs are not.
        interchangeable = {credential.kind, kind} <= {"oauth2", "token"}
        if credential.kind != kind and not interchangeable:
            return False
        if credential.kind == "oauth2":
            return set(spec.scopes) <= set(credential.scopes)
        return True

    def _raise_required(
        self, provider: Provider, kind: str, user_id: str, scopes: Iterable[str], detail: str = ""
    ) -> Any:
        try:
            url = self.authorization_url(provider.name, user_id=user_id, kind=kind, scopes=scopes)
        except SettingsError as exc:
            raise AuthRequiredError(
                f"{provider.title} authorization is needed for user {user_id!r}{detail}, but {exc}",
                provider=provider.name,
            ) from None
        what = "sign in and allow access" if self._kind_for_url(provider, kind) == "oauth2" else "enter the credential"
        with self._changed:
            code = next((p.user_code for p in self._pending.values() if p.url == url and p.user_code), None)
        if code:
            what = f"enter the code {code} (on any device) and allow access"
        raise AuthRequiredError(
            f"{provider.title} authorization is needed for user {user_id!r}{detail}: open {url} to {what}",
            provider=provider.name,
            url=url,
        )

    def _static_values(self, provider: Provider, kind: str) -> dict[str, str] | None:
        """Credentials written in settings ([auth.NAME] token / username+password / api_key+api_secret)."""
        entry = self._settings.auth.get(provider.name)
        if entry is None:
            return None
        if kind == "basic":
            if entry.username and entry.password is not None:
                return {"username": str(entry.username), "password": entry.password.get_secret_value()}
            return None
        if kind == "keypair":
            if entry.api_key is not None and entry.api_secret is not None:
                return {"api_key": entry.api_key.get_secret_value(), "api_secret": entry.api_secret.get_secret_value()}
            return None
        if entry.token is not None:
            return {"token": entry.token.get_secret_value()}
        return None

    def _fresh(self, credential: Credential, provider: Provider) -> Credential:
        """The credential, refreshed first when it expires within the margin: one refresh at a time per
        (user, provider) across threads and processes, re-reading the store once the lock is held."""
        margin = self._config.refresh_margin_seconds
        if not credential.expires_within(margin):
            return credential
        user_id, name = credential.user_id, credential.provider
        with self.store.lock(user_id, name):
            current = self.store.get(user_id, name)
            if current is None or current.status != ACTIVE:
                self._raise_required(provider, credential.kind, user_id, credential.scopes, " (the grant was removed)")
            assert current is not None
            if not current.expires_within(margin):
                return current  # another thread or process refreshed it meanwhile
            still_valid = current.expires_at is not None and current.expires_at > time.time()
            if "refresh_token" not in current.secrets or not provider.refresh:
                if still_valid:
                    return current
                self.store.put(_with(current, status=EXPIRED))
                self._raise_required(provider, current.kind, user_id, current.scopes, " (the token expired)")
            try:
                tokens = self.handler(provider).refresh(current)
            except OAuthError as exc:
                if exc.error in _GRANT_GONE:
                    self.store.put(_with(current, status=EXPIRED))
                    self._raise_required(
                        provider, current.kind, user_id, current.scopes, f" (refresh refused: {exc.error})"
                    )
                if still_valid:
                    return current
                raise AuthUnavailableError(
                    f"{provider.title}: the token expired and refreshing it failed ({exc}); try again later",
                    provider=name,
                ) from None
            except SettingsError as exc:  # e.g. the OAuth client was removed from the settings since
                if still_valid:
                    return current
                raise AuthRequiredError(f"{provider.title}: the token expired and {exc}", provider=name) from None
            refreshed = _from_tokens(user_id, name, tokens, previous=current)
            self.store.put(refreshed)  # a rotated refresh token is persisted before the new token is used
            return refreshed

    # -- starting consent ------------------------------------------------------------------------

    def _kind_for_url(self, provider: Provider, kind: str) -> str:
        """oauth2 when the client is configured; otherwise the provider's first form kind, if it has one."""
        if kind == "oauth2" and self.client(provider) is None:
            form_kinds = [k for k in provider.handlers if k != "oauth2"]
            if form_kinds:
                return form_kinds[0]
        return kind

    def base_url(self) -> str:
        if self._config.public_base_url:
            return self._config.public_base_url.rstrip("/")
        server = self._callback_server()
        host = f"[{server.host}]" if ":" in str(server.host) else server.host
        return f"http://{host}:{server.port}"

    def redirect_uri(self, provider: str) -> str:
        return f"{self.base_url()}/auth/{quote(provider, safe='')}/callback"

    def _callback_server(self) -> CallbackServer:
        with self._setup_lock:
            if self._server is None:
                public = urlsplit(self._config.public_base_url).netloc if self._config.public_base_url else ""
                self._server = CallbackServer(
                    self._config.callback_host,
                    self._config.callback_port,
                    self._handle,
                    public_hosts=(public,) if public else (),
                )
            return self._server

    def authorization_url(
        self,
        provider: str,
        *,
        user_id: str = "default",
        kind: str | None = None,
        scopes: Iterable[str] = (),
    ) -> str:
        """The URL the person opens to grant `user_id` access: the provider's consent page (OAuth), or the
        local form to enter a token. The same URL is returned while that request is pending."""
        entry = self.provider(provider)
        kind = self._kind_for_url(entry, kind or entry.default_kind)
        self.store.require_key(user_id, entry.name)  # before the person consents, not after
        if kind == "oauth2":
            handler = self.handler(entry)
            granted = self._granted_scopes(user_id, entry.name)
            wanted = tuple(sorted(set(scopes) | set(self.required_scopes(entry.name)) | set(granted)))
        else:
            wanted = ()
        device = kind == "oauth2" and self._config.device_flow and bool(entry.device_authorization_url)
        mode = "device" if device else kind
        if not device:
            self._callback_server()  # callbacks must have somewhere to land before the URL is shown
        with self._changed:
            self._expire_pending()
            for pending in self._pending.values():
                if (pending.user_id, pending.provider, pending.kind, pending.scopes) == (
                    user_id, entry.name, mode, wanted
                ):  # fmt: skip
                    return pending.url
        if device:
            return self._start_device_pending(entry, user_id, wanted)
        state = new_state()
        pending = Pending(
            state=state,
            user_id=user_id,
            provider=entry.name,
            kind=kind,
            scopes=wanted,
            redirect_uri=self.redirect_uri(entry.name),
            ttl=self._config.authorization_timeout_seconds,
        )
        if kind == "oauth2":
            challenge = None
            if entry.pkce:
                pending.code_verifier, challenge = pkce_pair()
            pending.url = handler.authorization_url(pending, challenge)
        else:
            pending.url = f"{self.base_url()}/auth/{quote(entry.name, safe='')}/form?state={state}"
        with self._changed:
            self._pending[state] = pending
            self._outcomes.pop((user_id, entry.name), None)
        return pending.url

    def _granted_scopes(self, user_id: str, provider: str) -> tuple[str, ...]:
        """The scopes of the user's active OAuth grant, asked for again so a new consent keeps them. A row that
        cannot be decrypted grants nothing: the new consent replaces it."""
        try:
            stored = self.store.get(user_id, provider)
        except UnreadableCredential:
            return ()
        if stored is not None and stored.status == ACTIVE and stored.kind == "oauth2":
            return stored.scopes
        return ()

    def _expire_pending(self) -> None:
        for state in [s for s, p in self._pending.items() if p.expired]:
            expired = self._pending.pop(state)
            self._outcomes[(expired.user_id, expired.provider)] = (False, "the authorization request expired")

    def initialize(self, specs: Iterable[AuthSpec], user_id: str = "default") -> dict[str, str]:
        """For each provider of `specs` the user still has to authorize: the URL to open (hyperpocket's
        `initialize_tool_auth`). Providers already usable are left out, and so are those whose grant only
        waits for the provider to be reachable again: no consent would help there."""
        urls: dict[str, str] = {}
        for spec in specs:
            if spec.provider in urls:
                continue
            try:
                self.environment(spec, user_id)
            except AuthRequiredError as exc:
                urls[spec.provider] = exc.url or str(exc)
            except AuthUnavailableError:
                continue
        return urls

    def pending(self, user_id: str | None = None) -> list[Pending]:
        with self._changed:
            self._expire_pending()
            return [p for p in self._pending.values() if user_id is None or p.user_id == user_id]

    def wait(self, timeout: float | None = None, *, user_id: str | None = None) -> dict[str, str]:
        """Wait until every pending authorization (of `user_id`, or of everyone) is finished or `timeout`
        passes. Returns provider -> "authorized", "partial: declined SCOPES" (a grant stored without
        every scope asked for), "failed: why" or "pending", for the requests pending now and those finished
        since the last `wait` (each outcome is reported once)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            self._expire_pending()
            mine = {(p.user_id, p.provider) for p in self._pending.values() if user_id in (None, p.user_id)}
            mine |= {key for key in self._outcomes if user_id in (None, key[0])}
            while True:
                self._expire_pending()
                open_ = {(p.user_id, p.provider) for p in self._pending.values()} & mine
                if not open_:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._changed.wait(timeout=0.5 if remaining is None else min(remaining, 0.5))
            result: dict[str, str] = {}
            for key in sorted(mine):
                if key in open_:
                    result[key[1]] = "pending"
                    continue
                ok, message = self._outcomes.pop(key, (False, "unknown"))
                result[key[1]] = message if ok else f"failed: {message}"
            return result

    # -- the callback server's requests ----------------------------------------------------------

    def _handle(self, method: str, provider: str, action: str, params: dict[str, str]) -> Page:
        if action == "callback" and method == "GET":
            return self._oauth_callback(provider, params)
        if action == "form" and method == "GET":
            return self._show_form(provider, params)
        if action == "form" and method == "POST":
            return self._submit_form(provider, params)
        return Page(405, "Not allowed", "That request is not allowed here.", "failure")

    def _take(self, provider: str, state: str | None, *, kinds: set[str], consume: bool = True) -> Pending | Page:
        """The pending request a state names, removed (single use). A Page when there is none."""
        unknown = Page(
            400,
            "Authorization link not recognised",
            "This link is unknown, was already used, or expired. Ask your agent for a new one.",
            "failure",
        )
        if not state:
            return unknown
        with self._changed:
            pending = self._pending.get(state)
            if pending is None or pending.provider != provider or pending.kind not in kinds:
                return unknown
            if consume:
                del self._pending[state]
        if pending.expired:
            self._finish(pending, False, "the authorization request expired")
            return Page(
                400,
                "Authorization expired",
                "This authorization took too long. Ask your agent for a new link.",
                "failure",
            )
        return pending

    def _finish(self, pending: Pending, ok: bool, message: str) -> None:
        """Record how a request ended, for `wait`: a grant was stored (`ok`, with the `grant_outcome`), or
        not, and why."""
        with self._changed:
            self._outcomes[(pending.user_id, pending.provider)] = (ok, message)
            if ok:  # other requests of this user for this provider are answered too
                for state in [
                    s for s, p in self._pending.items()
                    if (p.user_id, p.provider) == (pending.user_id, pending.provider)
                ]:  # fmt: skip
                    del self._pending[state]
            self._changed.notify_all()

    def _oauth_callback(self, provider_name: str, params: dict[str, str]) -> Page:
        taken = self._take(provider_name, params.get("state"), kinds={"oauth2"})
        if isinstance(taken, Page):
            return taken
        pending = taken
        provider = self.provider(provider_name)
        if params.get("error"):
            error = params["error"][:100]
            described = params.get("error_description", "")[:300]
            message = "You declined access." if error == "access_denied" else f"The provider answered: {error}."
            self._finish(pending, False, error + (f" ({described})" if described else ""))
            return Page(400, f"{provider.title} was not connected", f"{message} {described}".strip(), "failure")
        issuer = params.get("iss")
        if issuer is not None and provider.issuer and issuer != provider.issuer:
            self._finish(pending, False, "the callback came from another issuer")
            return Page(400, "Authorization refused", "The answer came from an unexpected server.", "failure")
        code = params.get("code")
        if not code:
            self._finish(pending, False, "the callback carried no code")
            return Page(400, "Authorization failed", "The provider sent no authorization code.", "failure")
        try:
            tokens = self.handler(provider).exchange_code(code, pending)
        except (OAuthError, SettingsError) as exc:
            self._finish(pending, False, str(exc))
            return Page(400, f"{provider.title} was not connected", f"Exchanging the code failed: {exc}", "failure")
        credential = _from_tokens(pending.user_id, provider.name, tokens, requested=pending.scopes)
        with self.store.lock(pending.user_id, provider.name):
            self.store.put(credential)
        self._finish(pending, True, grant_outcome(pending.scopes, credential))
        declined = declined_scopes(pending.scopes, credential)
        if declined:
            return Page(
                200,
                f"{provider.title} is connected, but not for everything asked",
                f"{provider.title} did not grant {', '.join(declined)}. pocket keeps what was granted for user "
                f"{pending.user_id}; the tools that need the rest cannot run until it is. You can close this tab.",
                "info",
            )
        return Page(
            200,
            f"{provider.title} is connected",
            f"pocket can now use {provider.title} for user {pending.user_id}. You can close this tab.",
            "success",
        )

    def _show_form(self, provider_name: str, params: dict[str, str]) -> Page:
        taken = self._take(provider_name, params.get("state"), kinds=set(FORM_FIELDS), consume=False)
        if isinstance(taken, Page):
            return taken
        provider = self.provider(provider_name)
        fields = list(FORM_FIELDS[taken.kind])
        help_text = provider.token_help or (f"Create one at {provider.docs_url}" if provider.docs_url else None)
        action = f"/auth/{quote(provider_name, safe='')}/form"
        return Page(
            200,
            f"Connect {provider.title}",
            f"Enter the {provider.title} credential pocket should use for user {taken.user_id}. "
            "It is stored encrypted on this machine.",
            "form",
            form=token_form(action, taken.state, fields, help_text),
        )

    def _submit_form(self, provider_name: str, params: dict[str, str]) -> Page:
        taken = self._take(provider_name, params.get("state"), kinds=set(FORM_FIELDS), consume=False)
        if isinstance(taken, Page):
            return taken
        values = {name: params.get(name, "").strip() for name, _, _ in FORM_FIELDS[taken.kind]}
        provider = self.provider(provider_name)
        if not all(values.values()):
            return Page(
                400, f"Connect {provider.title}", "Every field is required. Go back and fill them all in.", "failure"
            )
        with self._changed:
            if self._pending.pop(taken.state, None) is None:  # single use, even for two concurrent posts
                return Page(400, "Authorization link not recognised", "This form was already submitted.", "failure")
        self.login_with(provider_name, values, user_id=taken.user_id, kind=taken.kind)
        self._finish(taken, True, "authorized")
        return Page(
            200,
            f"{provider.title} is connected",
            f"pocket will use this credential for user {taken.user_id}. You can close this tab.",
            "success",
        )

    # -- pocket auth login / status / logout -----------------------------------------------------

    def login_with(
        self, provider: str, values: dict[str, str], *, user_id: str = "default", kind: str | None = None
    ) -> Credential:
        """Store a token, API key, username+password or key pair given directly (CLI, form)."""
        entry = self.provider(provider)
        kind = kind or next((k for k in entry.handlers if k != "oauth2"), "token")
        if kind not in FORM_FIELDS or (
            kind not in entry.handlers and not (kind == "token" and "oauth2" in entry.handlers)
        ):
            raise SettingsError(
                f"{entry.title} does not take a {kind} credential (it offers {', '.join(entry.handlers)})"
            )
        expected = [name for name, _, _ in FORM_FIELDS[kind]]
        missing = [name for name in expected if not values.get(name)]
        if missing:
            raise SettingsError(f"a {kind} credential needs {', '.join(missing)}")
        credential = Credential(
            user_id=user_id, provider=entry.name, kind=kind, secrets={n: SecretStr(values[n]) for n in expected}
        )
        with self.store.lock(user_id, entry.name):
            self.store.put(credential)
        return credential

    def status(self, user_id: str | None = None, provider: str | None = None) -> list[dict[str, Any]]:
        """Token-free summaries of the stored credentials (and of those set in settings)."""
        rows = []
        for user, name in self.store.entries(user_id):
            if provider is not None and name != provider:
                continue
            try:
                credential = self.store.get(user, name)
            except UnreadableCredential as exc:  # said for this row; the others are still shown
                rows.append({"user": user, "provider": name, "status": "unreadable", "problem": str(exc)})
                continue
            if credential is not None:
                rows.append(describe(credential))
        for name, entry in sorted(self._settings.auth.items()):
            if provider is not None and name != provider:
                continue
            if entry.token is not None or entry.password is not None or entry.api_key is not None:
                rows.append({"user": "*", "provider": name, "kind": "settings", "status": ACTIVE, "scopes": []})
        return rows

    def logout(self, provider: str, *, user_id: str = "default") -> dict[str, Any]:
        """Forget the user's credential, revoking it at the provider first where the provider allows it.
        Says which tokens were revoked (`revoked_tokens`) and which may still work there (`not_revoked`,
        token -> why); `revoked` is True only when every token was."""
        entry = self.provider(provider)
        with self.store.lock(user_id, entry.name):
            try:
                credential = self.store.get(user_id, entry.name)
                revocation = self._revoke(credential, entry) if credential is not None else Revocation()
            except UnreadableCredential:  # forgotten all the same: nothing else can be done with it
                revocation = Revocation(not_revoked={"stored credential": "it could not be decrypted"})
            deleted = self.store.delete(user_id, entry.name)
        return {
            "deleted": deleted,
            "revoked": revocation.complete,
            "revoked_tokens": list(revocation.revoked),
            "not_revoked": dict(revocation.not_revoked),
        }

    def _revoke(self, credential: Credential, entry: Provider) -> Revocation:
        """What pocket obtained by OAuth (and a pasted Slack token, which Slack can revoke) is revoked at the
        provider; a pasted key or password is revoked where the person created it."""
        if credential.kind != "oauth2" and not (credential.kind == "token" and entry.revocation_method == "slack"):
            return Revocation()
        if self.client(entry) is None:
            return Revocation.refused(credential, "no OAuth client is configured to ask the provider")
        return self.handler(entry).revoke(credential)

    # -- device authorization grant (RFC 8628) --------------------------------------------------

    def start_device(
        self, provider: str, *, user_id: str = "default", scopes: Iterable[str] = ()
    ) -> DeviceAuthorization:
        entry = self.provider(provider)
        handler = self.handler(entry)
        if not isinstance(handler, OAuth2Handler):
            raise SettingsError(f"{entry.title}: the custom handler does not implement the device grant")
        self.store.require_key(user_id, entry.name)  # before the person approves, not after
        wanted = tuple(sorted(set(scopes) | set(self.required_scopes(entry.name))))
        return handler.start_device(user_id, wanted)

    def finish_device(self, device: DeviceAuthorization, *, sleep: Any = time.sleep) -> Credential:
        """Poll until the person approves (or denies) on their other device, then store the grant."""
        entry = self.provider(device.provider)
        handler = self.handler(entry)
        assert isinstance(handler, OAuth2Handler)
        tokens = handler.poll_device(device, sleep=sleep)
        credential = _from_tokens(device.user_id, entry.name, tokens, requested=device.scopes)
        with self.store.lock(device.user_id, entry.name):
            self.store.put(credential)
        return credential

    def _start_device_pending(self, provider: Provider, user_id: str, scopes: tuple[str, ...]) -> str:
        """Start a device grant for an agent's authorization request and poll for it in the background."""
        device = self.start_device(provider.name, user_id=user_id, scopes=scopes)
        pending = Pending(
            state=new_state(),
            user_id=user_id,
            provider=provider.name,
            kind="device",
            scopes=scopes,
            redirect_uri="",
            ttl=max(0.0, device.expires_at - time.time()),
            url=device.verification_uri_complete or device.verification_uri,
            user_code=device.user_code,
        )
        with self._changed:
            self._pending[pending.state] = pending
            self._outcomes.pop((user_id, provider.name), None)
        threading.Thread(
            target=self._poll_device, args=(pending, device), name="pocket-auth-device", daemon=True
        ).start()
        return pending.url

    def _poll_device(self, pending: Pending, device: DeviceAuthorization) -> None:
        def sleep(seconds: float) -> None:
            if self._closing.wait(seconds):
                raise _Closed

        try:
            credential = self.finish_device(device, sleep=sleep)
        except _Closed:
            return
        except (OAuthError, SettingsError) as exc:
            with self._changed:
                self._pending.pop(pending.state, None)
            self._finish(pending, False, str(exc))
            return
        with self._changed:
            self._pending.pop(pending.state, None)
        self._finish(pending, True, grant_outcome(device.scopes, credential))

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the callback server and device polling, release connections. Pending authorizations are dropped."""
        self._closing.set()
        with self._setup_lock:
            server, self._server = self._server, None
        if server is not None:
            server.close()
        with self._changed:
            self._pending.clear()
            self._changed.notify_all()
        if self._owns_http:
            self._http.close()

    def __repr__(self) -> str:
        return f"Authenticator(data_dir={str(self._settings.data_dir)!r})"


class _Closed(Exception):
    """The Authenticator closed while a device grant was polling."""


def _with(credential: Credential, **changes: Any) -> Credential:
    from dataclasses import replace

    return replace(credential, **changes)


def _from_tokens(
    user_id: str,
    provider: str,
    tokens: TokenSet,
    *,
    requested: tuple[str, ...] = (),
    previous: Credential | None = None,
) -> Credential:
    """A credential from a token response. The granted scope is the response's; when the response does
    not say, it is the previous grant's (refresh) or the requested one (RFC 6749 section 5.1)."""
    now = time.time()
    secrets = {"token": tokens.access_token}
    refresh_token = tokens.refresh_token
    if refresh_token is None and previous is not None:
        refresh_token = previous.secrets.get("refresh_token")  # Google: a refresh keeps the old refresh token
    if refresh_token is not None:
        secrets["refresh_token"] = refresh_token
    if tokens.scopes is not None:
        scopes = tokens.scopes
    else:
        scopes = previous.scopes if previous is not None else requested
    return Credential(
        user_id=user_id,
        provider=provider,
        kind="oauth2",
        secrets=secrets,
        scopes=tuple(scopes),
        expires_at=now + tokens.expires_in if tokens.expires_in else None,
        obtained_at=now,
        extra={**(previous.extra if previous else {}), **tokens.extra},
    )


def declined_scopes(requested: Iterable[str], credential: Credential) -> list[str]:
    """The requested scopes the provider did not grant (it may drop any it does not know, or the person may
    untick some): a tool needing one would ask for consent again."""
    return sorted(set(requested) - set(credential.scopes))


def grant_outcome(requested: Iterable[str], credential: Credential) -> str:
    """How a stored grant answers a request, as `wait` reports it: "authorized", or "partial: declined ..."."""
    declined = declined_scopes(requested, credential)
    return f"partial: declined {', '.join(declined)}" if declined else "authorized"
