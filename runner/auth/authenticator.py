"""`Authenticator`: the one object `Pocket` and the CLI use for credentials. It composes the parts and
delegates to them (its own code is `initialize`, a loop over `environment`); which part does what:

- `AuthContext` (context.py): settings, the HTTP client, the store, resolved providers, declared scopes;
- `Refresher` (refresh.py): the credential of a tool call, refreshed ahead of expiry;
- `Consent` (consent.py): authorization requests pending and their outcomes, for `wait`;
- `Authorizer` (authorize.py): opening a request, the URL to show; `DeviceGrants` (device.py): RFC 8628;
- `Pages` (pages.py) behind `CallbackSite` (callback.py): the loopback server's pages;
- `Admin` (admin.py): `pocket auth login / status / logout`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import httpx

from runner.auth.admin import Admin
from runner.auth.authorize import Authorizer
from runner.auth.callback import CallbackSite, Handler
from runner.auth.consent import Consent
from runner.auth.context import AuthContext
from runner.auth.device import DeviceGrants
from runner.auth.oauth import Client, DeviceAuthorization, OAuthHandler, Pending
from runner.auth.pages import Pages
from runner.auth.providers import Provider
from runner.auth.refresh import Refresher
from runner.auth.results import CredentialStatus, LoginPrompts, LoginResult, LogoutResult
from runner.auth.store import Credential, CredentialStore
from runner.errors import AuthRequiredError, AuthUnavailableError
from runner.manifest import AuthSpec
from runner.settings import Settings


class Authenticator:
    """Resolves, obtains and keeps fresh the credentials of tool calls, per user."""

    def __init__(self, settings: Settings, *, http: httpx.Client | None = None):
        self._context = AuthContext(settings, http)
        self._consent = Consent(lambda: self._context.store)  # shared with the user's other processes
        self._pages = Pages(self._context, self._consent)
        self._site = CallbackSite(settings.credentials, self._pages.handle)
        self._devices = DeviceGrants(self._context, self._consent)
        self._authorizer = Authorizer(self._context, self._consent, self._devices, self._site)
        self._refresher = Refresher(self._context, self._authorizer)
        self._admin = Admin(self._context, self._consent, self._authorizer, self._devices)

    # -- configuration ---------------------------------------------------------------------------

    @property
    def store(self) -> CredentialStore:
        return self._context.store

    def provider(self, name: str) -> Provider:
        """The catalog entry with settings applied, endpoints discovered when only an issuer is given."""
        return self._context.provider(name)

    def client(self, provider: Provider) -> Client | None:
        return self._context.client(provider)

    def handler(self, provider: Provider) -> OAuthHandler:
        return self._context.handler(provider)

    def require_scopes(self, provider: str, scopes: Iterable[str]) -> None:
        """Declare scopes a loaded tool needs; consent for `provider` asks for the union of all of them."""
        self._context.require_scopes(provider, scopes)

    def required_scopes(self, provider: str) -> tuple[str, ...]:
        return self._context.required_scopes(provider)

    def base_url(self) -> str:
        """Where the callback server is reached (starting it unless `public_base_url` is set)."""
        return self._site.base_url()

    def serve_pages_at(self, base_url: str) -> Handler:
        """The consent pages (`/auth/NAME/callback`, `/form`) are served by the caller's own HTTP server at
        `base_url` (the MCP server's public URL): no loopback server is started. Returns their handler."""
        self._site.hand_over(base_url)
        return self._pages.handle

    def redirect_uri(self, provider: str) -> str:
        return self._site.url(provider, "callback")

    # -- the tool's variables ----------------------------------------------------------------------

    def environment(self, spec: AuthSpec, user_id: str = "default") -> dict[str, str]:
        """The variables the tool receives. Raises AuthRequiredError when the user must authorize first, and
        SettingsError when nothing the user could authorize would help (an unknown provider or handler)."""
        return self._refresher.environment(spec, user_id)

    def secret_values(self, spec: AuthSpec, environment: Mapping[str, str]) -> list[str]:
        """The values of `environment` (what `environment(spec)` gave) to mask in the tool's result: every one
        but those made from no secret field, such as a username. A variable the templates of the spec's kind
        do not name is taken as secret."""
        provider = self.provider(spec.provider)
        plain = provider.plain_variables(provider.kind_of(spec.handler))
        return [value for variable, value in environment.items() if variable not in plain]

    # -- consent ---------------------------------------------------------------------------------

    def authorization_url(
        self, provider: str, *, user_id: str = "default", kind: str | None = None, scopes: Iterable[str] = ()
    ) -> str:
        """The URL the person opens to grant `user_id` access: the provider's consent page (OAuth), or the
        local form to enter a token. The same URL is returned while that request is pending."""
        return self._authorizer.url(provider, user_id=user_id, kind=kind, scopes=scopes)

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
        return self._consent.pending(user_id)

    def wait(self, timeout: float | None = None, *, user_id: str | None = None) -> dict[str, str]:
        """Wait until every pending authorization (of `user_id`, or of everyone) is finished or `timeout`
        passes. Returns provider -> "authorized", "partial: declined SCOPES" (a grant stored without
        every scope asked for), "failed: why" or "pending", for the requests pending now and those finished
        since the last `wait` (each outcome is reported once)."""
        return {name: str(outcome) for name, outcome in self._consent.wait(timeout, user_id=user_id).items()}

    # -- pocket auth login / status / logout -----------------------------------------------------

    def login(
        self,
        provider: str,
        prompts: LoginPrompts,
        *,
        user_id: str = "default",
        handler: str | None = None,
        device: bool = False,
        scopes: Iterable[str] = (),
        timeout: float | None = None,
    ) -> LoginResult:
        """`pocket auth login`: sign in with OAuth (in a browser, or with `device` on another device) when a
        client is configured, else read the provider's kind of credential through `prompts`; `handler`
        names the kind instead. Waits up to `timeout` for the browser's consent."""
        return self._admin.login(
            provider, prompts, user_id=user_id, handler=handler, device=device, scopes=scopes, timeout=timeout
        )

    def login_with(
        self, provider: str, values: dict[str, str], *, user_id: str = "default", kind: str | None = None
    ) -> Credential:
        """Store a token, API key, username+password or key pair given directly (CLI, form)."""
        return self._admin.login_with(provider, values, user_id=user_id, kind=kind)

    def status(self, user_id: str | None = None, provider: str | None = None) -> list[CredentialStatus]:
        """Token-free summaries of the stored credentials (and of those set in settings)."""
        return self._admin.status(user_id, provider)

    def logout(self, provider: str, *, user_id: str = "default") -> LogoutResult:
        """Forget the user's credential, revoking it at the provider first where the provider allows it.
        Says which tokens were revoked and which may still work there (`revocation.not_revoked`, token -> why)."""
        return self._admin.logout(provider, user_id=user_id)

    def start_device(
        self, provider: str, *, user_id: str = "default", scopes: Iterable[str] = ()
    ) -> DeviceAuthorization:
        return self._devices.start(provider, user_id=user_id, scopes=scopes)

    def finish_device(self, device: DeviceAuthorization, *, sleep: Callable[[float], None] = time.sleep) -> Credential:
        """Poll until the person approves (or denies) on their other device, then store the grant."""
        return self._devices.finish(device, sleep=sleep)

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the callback server and device polling, release connections. Pending authorizations are dropped."""
        self._devices.close()
        self._site.close()
        self._consent.clear()
        self._context.close()

    def __repr__(self) -> str:
        return f"Authenticator(data_dir={str(self._context.settings.data_dir)!r})"
