"""Starting consent: the URL a person opens to grant access, and the AuthRequiredError that carries it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NoReturn

from runner.auth.callback import CallbackSite
from runner.auth.consent import Consent
from runner.auth.context import AuthContext
from runner.auth.device import DeviceGrants
from runner.auth.oauth import Pending, new_state, pkce_pair
from runner.auth.providers import Provider
from runner.auth.store import ACTIVE
from runner.errors import AuthRequiredError, SettingsError, UnreadableCredential


class Authorizer:
    """Opens authorization requests: an OAuth consent page, a device code, or the local credential form."""

    def __init__(self, context: AuthContext, consent: Consent, devices: DeviceGrants, site: CallbackSite):
        self._context = context
        self._consent = consent
        self._devices = devices
        self._site = site

    def _kind_for_url(self, provider: Provider, kind: str) -> str:
        """oauth2 when the client is configured; otherwise the provider's first form kind, if it has one."""
        if kind == "oauth2" and self._context.client(provider) is None:
            form_kinds = [k for k in provider.handlers if k != "oauth2"]
            if form_kinds:
                return form_kinds[0]
        return kind

    def url(
        self, provider: str, *, user_id: str = "default", kind: str | None = None, scopes: Iterable[str] = ()
    ) -> str:
        """The URL the person opens to grant `user_id` access: the provider's consent page (OAuth), or the
        local form to enter a token. The same URL is returned while that request is pending."""
        entry = self._context.provider(provider)
        kind = self._kind_for_url(entry, kind or entry.default_kind)
        self._context.store.require_key(user_id, entry.name)  # before the person consents, not after
        if kind == "oauth2":
            handler = self._context.handler(entry)
            granted = self._granted_scopes(user_id, entry.name)
            wanted = tuple(sorted(set(scopes) | set(self._context.required_scopes(entry.name)) | set(granted)))
        else:
            wanted = ()
        device = kind == "oauth2" and self._context.config.device_flow and bool(entry.device_authorization_url)
        if not device:
            self._site.listen()  # callbacks must have somewhere to land before the URL is shown
        existing = self._consent.find(user_id, entry.name, "device" if device else kind, wanted)
        if existing is not None:
            return existing
        if device:
            return self._devices.start_pending(entry.name, user_id, wanted)
        pending = Pending(
            state=new_state(),
            user_id=user_id,
            provider=entry.name,
            kind=kind,
            scopes=wanted,
            redirect_uri=self._site.url(entry.name, "callback"),
            ttl=self._context.config.authorization_timeout_seconds,
        )
        if kind == "oauth2":
            challenge = None
            if entry.pkce:
                pending.code_verifier, challenge = pkce_pair()
            pending.url = handler.authorization_url(pending, challenge)
        else:
            pending.url = f"{self._site.url(entry.name, 'form')}?state={pending.state}"
        self._consent.open(pending)
        return pending.url

    def required(
        self, provider: Provider, kind: str, user_id: str, scopes: Iterable[str], detail: str = ""
    ) -> NoReturn:
        """Raise the AuthRequiredError that tells the person what to open (and the code to enter, if any)."""
        try:
            url = self.url(provider.name, user_id=user_id, kind=kind, scopes=scopes)
        except SettingsError as exc:
            raise AuthRequiredError(
                f"{provider.title} authorization is needed for user {user_id!r}{detail}, but {exc}",
                provider=provider.name,
            ) from None
        what = "sign in and allow access" if self._kind_for_url(provider, kind) == "oauth2" else "enter the credential"
        code = self._consent.user_code(url)
        if code:
            what = f"enter the code {code} (on any device) and allow access"
        raise AuthRequiredError(
            f"{provider.title} authorization is needed for user {user_id!r}{detail}: open {url} to {what}",
            provider=provider.name,
            url=url,
        )

    def _granted_scopes(self, user_id: str, provider: str) -> tuple[str, ...]:
        """The scopes of the user's active OAuth grant, asked for again so a new consent keeps them. A row that
        cannot be decrypted grants nothing: the new consent replaces it."""
        try:
            stored = self._context.store.get(user_id, provider)
        except UnreadableCredential:
            return ()
        if stored is not None and stored.status == ACTIVE and stored.kind == "oauth2":
            return stored.scopes
        return ()
