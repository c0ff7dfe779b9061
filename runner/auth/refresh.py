"""The credential of a tool call: from settings or the store, checked usable, refreshed ahead of expiry."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from runner import telemetry
from runner.auth.context import AuthContext
from runner.auth.oauth import TokenSet
from runner.auth.providers import Provider
from runner.auth.store import ACTIVE, EXPIRED, Credential
from runner.errors import AuthRequiredError, AuthUnavailableError, OAuthError, SettingsError
from runner.manifest import AuthSpec

if TYPE_CHECKING:
    from runner.auth.authorize import Authorizer

# Errors of a refresh that mean the grant is gone: the person has to consent again.
# Slack says invalid_refresh_token / token_revoked, GitHub bad_refresh_token, everyone else invalid_grant.
_GRANT_GONE = {
    "invalid_grant",
    "access_denied",
    "token_revoked",
    "invalid_refresh_token",
    "bad_refresh_token",
}
# Errors that refuse the OAuth client, not the grant: the operator's settings are wrong, the person's grant
# is kept. RFC 6749 invalid_client / unauthorized_client; GitHub incorrect_client_credentials; Slack
# invalid_client_id / bad_client_secret.
_CLIENT_REFUSED = {
    "invalid_client",
    "unauthorized_client",
    "incorrect_client_credentials",
    "invalid_client_id",
    "bad_client_secret",
}


class Refresher:
    """Finds the usable credential for a tool's auth spec, refreshing it first when it is about to expire;
    asks the `Authorizer` to raise AuthRequiredError when there is none."""

    def __init__(self, context: AuthContext, authorizer: Authorizer):
        self._context = context
        self._authorizer = authorizer

    def environment(self, spec: AuthSpec, user_id: str) -> dict[str, str]:
        provider = self._context.provider(spec.provider)
        kind = provider.kind_of(spec.handler)
        static = self._static_values(provider, kind)
        if static is not None:
            return provider.environment(kind, static)
        credential = self._context.store.get(user_id, provider.name)
        if credential is not None and _usable(credential, provider, spec, kind):
            credential = self._fresh(credential, provider)
            return provider.environment(credential.kind, credential.values())
        missing = ""
        if credential is not None and credential.status == ACTIVE and credential.kind == "oauth2":
            lacking = sorted(set(spec.scopes) - set(credential.scopes))
            if lacking:
                missing = f" (the stored grant lacks the scope{'s' if len(lacking) > 1 else ''} {', '.join(lacking)})"
        elif credential is not None and credential.status == EXPIRED:
            missing = " (the stored grant expired or was revoked)"
        self._authorizer.required(provider, kind, user_id, spec.scopes, missing)

    def _static_values(self, provider: Provider, kind: str) -> dict[str, str] | None:
        """Credentials written in settings ([auth.NAME] token / username+password / api_key+api_secret)."""
        entry = self._context.settings.auth.get(provider.name)
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
        (user, provider) across threads, processes and the replicas sharing a PostgreSQL store (an advisory
        lock), re-reading the store once the lock is held."""
        margin = self._context.config.refresh_margin_seconds
        if not credential.expires_within(margin):
            return credential
        store, required = self._context.store, self._authorizer.required
        user_id, name = credential.user_id, credential.provider
        with store.lock(user_id, name):
            current = store.get(user_id, name)
            if current is None or current.status != ACTIVE:
                required(provider, credential.kind, user_id, credential.scopes, " (the grant was removed)")
            if not current.expires_within(margin):
                return current  # another thread or process refreshed it meanwhile
            still_valid = current.expires_at is not None and current.expires_at > time.time()
            if "refresh_token" not in current.secrets or not provider.refresh:
                if still_valid:
                    return current
                store.put(replace(current, status=EXPIRED))
                required(provider, current.kind, user_id, current.scopes, " (the token expired)")
            try:
                with telemetry.span("pocket.credentials.refresh", {"pocket.auth.provider": name, "user.id": user_id}):
                    tokens = self._context.handler(provider).refresh(current)
            except OAuthError as exc:
                if exc.error in _CLIENT_REFUSED:
                    if still_valid:
                        return current
                    raise _client_refused(provider, user_id, exc) from None
                if exc.error in _GRANT_GONE:
                    store.put(replace(current, status=EXPIRED))
                    required(provider, current.kind, user_id, current.scopes, f" (refresh refused: {exc.error})")
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
            refreshed = credential_from_tokens(user_id, name, tokens, previous=current)
            store.put(refreshed)  # a rotated refresh token is persisted before the new token is used
            return refreshed


def _usable(credential: Credential, provider: Provider, spec: AuthSpec, kind: str) -> bool:
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


def _client_refused(provider: Provider, user_id: str, exc: OAuthError) -> SettingsError:
    """The provider refused the OAuth client while refreshing: name the settings to fix; the grant stays."""
    name = provider.name
    variable = f"POCKET_AUTH__{name.upper()}__CLIENT_ID"
    return SettingsError(
        f"{provider.title} refused the OAuth client while refreshing the token of user {user_id!r} ({exc}): "
        f"check [auth.{name}] client_id and client_secret in .secrets.toml (or {variable} / __CLIENT_SECRET) "
        "and that the client may use refresh tokens; the user's grant is kept, no new consent is needed"
    )


def credential_from_tokens(
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
