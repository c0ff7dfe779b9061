"""The device authorization grant (RFC 8628): for machines without a browser, the person approves on a phone.

`pocket auth login --device` starts and finishes one in the foreground; an agent's request for consent
starts one that is polled on a daemon thread, its outcome recorded in `Consent` like a callback's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from runner.auth.consent import Consent
from runner.auth.context import AuthContext
from runner.auth.oauth import DeviceAuthorization, OAuth2Handler, Pending, new_state
from runner.auth.refresh import credential_from_tokens
from runner.auth.results import GrantOutcome
from runner.auth.store import Credential
from runner.errors import OAuthError, SettingsError


class _Closed(Exception):
    """The Authenticator closed while a device grant was polling."""


class DeviceGrants:
    """Starts device grants and polls them until the person approves, denies, or the Authenticator closes."""

    def __init__(self, context: AuthContext, consent: Consent):
        self._context = context
        self._consent = consent
        self._closing = threading.Event()

    def start(self, provider: str, *, user_id: str = "default", scopes: Iterable[str] = ()) -> DeviceAuthorization:
        entry = self._context.provider(provider)
        handler = self._context.handler(entry)
        if not isinstance(handler, OAuth2Handler):
            raise SettingsError(f"{entry.title}: the custom handler does not implement the device grant")
        self._context.store.require_key(user_id, entry.name)  # before the person approves, not after
        wanted = tuple(sorted(set(scopes) | set(self._context.required_scopes(entry.name))))
        return handler.start_device(user_id, wanted)

    def finish(self, device: DeviceAuthorization, *, sleep: Callable[[float], None] = time.sleep) -> Credential:
        """Poll until the person approves (or denies) on their other device, then store the grant."""
        entry = self._context.provider(device.provider)
        handler = self._context.handler(entry)
        assert isinstance(handler, OAuth2Handler)
        tokens = handler.poll_device(device, sleep=sleep)
        credential = credential_from_tokens(device.user_id, entry.name, tokens, requested=device.scopes)
        self._context.save(credential)
        return credential

    def start_pending(self, provider: str, user_id: str, scopes: tuple[str, ...]) -> str:
        """Start a device grant for an agent's authorization request and poll for it in the background."""
        device = self.start(provider, user_id=user_id, scopes=scopes)
        pending = Pending(
            state=new_state(),
            user_id=user_id,
            provider=device.provider,
            kind="device",
            scopes=scopes,
            redirect_uri="",
            ttl=max(0.0, device.expires_at - time.time()),
            url=device.verification_uri_complete or device.verification_uri,
            user_code=device.user_code,
        )
        self._consent.open(pending)
        threading.Thread(target=self._poll, args=(pending, device), name="pocket-auth-device", daemon=True).start()
        return pending.url

    def close(self) -> None:
        """Stop every background poll at its next wait."""
        self._closing.set()

    def _poll(self, pending: Pending, device: DeviceAuthorization) -> None:
        def sleep(seconds: float) -> None:
            if self._closing.wait(seconds):
                raise _Closed

        try:
            credential = self.finish(device, sleep=sleep)
        except _Closed:
            return
        except (OAuthError, SettingsError) as exc:
            self._consent.discard(pending)
            self._consent.finish(pending, GrantOutcome.failed(str(exc)))
            return
        self._consent.discard(pending)
        self._consent.finish(pending, GrantOutcome.of_grant(device.scopes, credential))
