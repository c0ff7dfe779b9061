"""`pocket auth login / status / logout`: storing a credential given directly, listing, revoking, forgetting."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from runner.auth.context import AuthContext
from runner.auth.oauth import Revocation
from runner.auth.providers import FORM_FIELDS, Provider
from runner.auth.store import ACTIVE, Credential, describe
from runner.errors import SettingsError, UnreadableCredential


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
    """What a person does with their credentials by hand, apart from consent."""

    def __init__(self, context: AuthContext):
        self._context = context

    def login_with(
        self, provider: str, values: dict[str, str], *, user_id: str = "default", kind: str | None = None
    ) -> Credential:
        credential = credential_from_values(self._context.provider(provider), values, user_id=user_id, kind=kind)
        self._context.save(credential)
        return credential

    def status(self, user_id: str | None = None, provider: str | None = None) -> list[dict[str, Any]]:
        store = self._context.store
        rows = []
        for user, name in store.entries(user_id):
            if provider is not None and name != provider:
                continue
            try:
                credential = store.get(user, name)
            except UnreadableCredential as exc:  # said for this row; the others are still shown
                rows.append({"user": user, "provider": name, "status": "unreadable", "problem": str(exc)})
                continue
            if credential is not None:
                rows.append(describe(credential))
        for name, entry in sorted(self._context.settings.auth.items()):
            if provider is not None and name != provider:
                continue
            if entry.token is not None or entry.password is not None or entry.api_key is not None:
                rows.append({"user": "*", "provider": name, "kind": "settings", "status": ACTIVE, "scopes": []})
        return rows

    def logout(self, provider: str, *, user_id: str = "default") -> dict[str, Any]:
        entry = self._context.provider(provider)
        store = self._context.store
        with store.lock(user_id, entry.name):
            try:
                credential = store.get(user_id, entry.name)
                revocation = self._revoke(credential, entry) if credential is not None else Revocation()
            except UnreadableCredential:  # forgotten all the same: nothing else can be done with it
                revocation = Revocation(not_revoked={"stored credential": "it could not be decrypted"})
            deleted = store.delete(user_id, entry.name)
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
        if self._context.client(entry) is None:
            return Revocation.refused(credential, "no OAuth client is configured to ask the provider")
        return self._context.handler(entry).revoke(credential)
