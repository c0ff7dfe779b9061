"""`pocket auth login / status / logout`: storing a credential given directly, listing, revoking, forgetting."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import SecretStr

from runner.auth.authorize import Authorizer
from runner.auth.consent import Consent
from runner.auth.context import AuthContext
from runner.auth.device import DeviceGrants
from runner.auth.oauth import Revocation
from runner.auth.providers import FORM_FIELDS, Provider
from runner.auth.results import CredentialStatus, GrantOutcome, GrantState, LoginPrompts, LoginResult, LogoutResult
from runner.auth.store import Credential
from runner.errors import OAuthError, SettingsError, UnreadableCredential


def credential_from_values(provider: Provider, values: dict[str, str], *, user_id: str, kind: str | None) -> Credential:
    """A token, API key, username+password or key pair as a person entered it (CLI, form), checked complete.
    Without `kind`, the provider's first kind that is not OAuth."""
    kind = kind or next((k for k in provider.handlers if k != "oauth2"), "token")
    if kind not in FORM_FIELDS or (
        kind not in provider.handlers and not (kind == "token" and "oauth2" in provider.handlers)
    ):
        raise SettingsError(
            f"{provider.title} does not take a {kind} credential (it offers {', '.join(provider.handlers)})"
        )
    expected = [name for name, _, _ in FORM_FIELDS[kind]]
    missing = [name for name in expected if not values.get(name)]
    if missing:
        raise SettingsError(f"a {kind} credential needs {', '.join(missing)}")
    return Credential(
        user_id=user_id, provider=provider.name, kind=kind, secrets={n: SecretStr(values[n]) for n in expected}
    )


class Admin:
    """What a person does with their credentials by hand: sign in or enter one, list them, forget them."""

    def __init__(self, context: AuthContext, consent: Consent, authorizer: Authorizer, devices: DeviceGrants):
        self._context = context
        self._consent = consent
        self._authorizer = authorizer
        self._devices = devices

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
        """Sign in with OAuth (browser or device grant) when a client is configured, else ask for the
        provider's kind of credential; `handler` or `device` choose instead."""
        entry = self._context.provider(provider)
        kind = self._login_kind(entry, handler, device, prompts)
        if kind in FORM_FIELDS:
            values = {name: prompts.value(entry, label, secret=secret) for name, label, secret in FORM_FIELDS[kind]}
            self.login_with(entry.name, values, user_id=user_id, kind=kind)
            return LoginResult(entry, user_id, kind, GrantOutcome(GrantState.AUTHORIZED))
        if device:
            grant = self._devices.start(entry.name, user_id=user_id, scopes=scopes)
            prompts.device_code(grant)
            try:
                outcome = GrantOutcome.of_grant(grant.scopes, self._devices.finish(grant))
            except OAuthError as exc:  # denied, expired, refused: not authorized, as a browser consent would end
                outcome = GrantOutcome.failed(str(exc))
        else:
            prompts.authorization_url(
                entry, self._authorizer.url(entry.name, user_id=user_id, kind=kind, scopes=scopes)
            )
            outcome = self._consent.wait(timeout, user_id=user_id).get(entry.name, GrantOutcome(GrantState.AUTHORIZED))
        return LoginResult(entry, user_id, kind, outcome)

    def _login_kind(self, provider: Provider, handler: str | None, device: bool, prompts: LoginPrompts) -> str:
        kind = provider.kind_of(handler) if handler else None
        configure = (
            f"set [auth.{provider.name}] client_id (and client_secret) in .secrets.toml, "
            f"or POCKET_AUTH__{provider.name.upper()}__CLIENT_ID (and __CLIENT_SECRET)"
        )
        has_client = self._context.client(provider) is not None
        if device:
            if kind not in (None, "oauth2"):
                raise SettingsError(f"--device signs in with OAuth: it does not go with --handler {handler}")
            if "oauth2" not in provider.handlers:
                raise SettingsError(
                    f"{provider.title} has no OAuth sign-in, so no --device: run `pocket auth login {provider.name}`"
                )
            if not has_client:
                raise SettingsError(f"--device needs an OAuth client for {provider.title}: {configure}")
            return "oauth2"
        if kind is not None:
            return kind
        if "oauth2" in provider.handlers and has_client:
            return "oauth2"
        kind = next((k for k in provider.handlers if k != "oauth2"), "oauth2")
        if kind != "oauth2" and "oauth2" in provider.handlers:
            prompts.fallback(provider, kind, configure)
        return kind

    def login_with(
        self, provider: str, values: dict[str, str], *, user_id: str = "default", kind: str | None = None
    ) -> Credential:
        credential = credential_from_values(self._context.provider(provider), values, user_id=user_id, kind=kind)
        self._context.save(credential)
        return credential

    def status(self, user_id: str | None = None, provider: str | None = None) -> list[CredentialStatus]:
        store = self._context.store
        rows = []
        for user, name in store.entries(user_id):
            if provider is not None and name != provider:
                continue
            try:
                credential = store.get(user, name)
            except UnreadableCredential as exc:  # said for this row; the others are still shown
                rows.append(CredentialStatus.unreadable(user, name, str(exc)))
                continue
            if credential is not None:
                rows.append(CredentialStatus.of(credential))
        for name, entry in sorted(self._context.settings.auth.items()):
            if provider is not None and name != provider:
                continue
            if entry.token is not None or entry.password is not None or entry.api_key is not None:
                rows.append(CredentialStatus.in_settings(name))
        return rows

    def logout(self, provider: str, *, user_id: str = "default") -> LogoutResult:
        entry = self._context.provider(provider)
        store = self._context.store
        with store.lock(user_id, entry.name):
            try:
                credential = store.get(user_id, entry.name)
                revocation = self._revoke(credential, entry) if credential is not None else Revocation()
            except UnreadableCredential:  # forgotten all the same: nothing else can be done with it
                revocation = Revocation(not_revoked={"stored credential": "it could not be decrypted"})
            deleted = store.delete(user_id, entry.name)
        return LogoutResult(deleted, revocation)

    def _revoke(self, credential: Credential, entry: Provider) -> Revocation:
        """What pocket obtained by OAuth (and a pasted Slack token, which Slack can revoke) is revoked at the
        provider; a pasted key or password is revoked where the person created it."""
        if credential.kind != "oauth2" and not (credential.kind == "token" and entry.revocation_method == "slack"):
            return Revocation()
        if self._context.client(entry) is None:
            return Revocation.refused(credential, "no OAuth client is configured to ask the provider")
        return self._context.handler(entry).revoke(credential)
