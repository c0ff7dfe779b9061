"""The consent state machine: authorization requests pending, and how each ended, for `wait` to report.

A request is opened when its URL is shown, claimed (single use) when its callback arrives, and
finished with a `GrantOutcome`. A claimed request stays pending while its code is exchanged: `wait`
reports its outcome, not "unknown", however long the token endpoint takes. Expired requests finish as
failures. One condition guards it all, so a thread in `wait` wakes when any request ends.
"""

from __future__ import annotations

import threading
import time

from runner.auth.oauth import Pending
from runner.auth.results import GrantOutcome, GrantState

_EXPIRED = "the authorization request expired"


class Expired(Exception):
    """The request a state names outlived its time to live (its outcome is already recorded)."""


class Consent:
    """Pending authorization requests by state, and the outcomes not yet reported, per (user, provider)."""

    def __init__(self) -> None:
        self._pending: dict[str, Pending] = {}
        self._claimed: set[str] = set()  # states whose callback arrived, being exchanged: used, not yet ended
        self._outcomes: dict[tuple[str, str], GrantOutcome] = {}
        self._changed = threading.Condition()

    def open(self, pending: Pending) -> None:
        """Register a request whose URL is about to be shown; an earlier unreported outcome is dropped."""
        with self._changed:
            self._pending[pending.state] = pending
            self._outcomes.pop((pending.user_id, pending.provider), None)

    def find(self, user_id: str, provider: str, kind: str, scopes: tuple[str, ...]) -> str | None:
        """The URL of the same request while it is pending, so asking twice shows one link."""
        with self._changed:
            self._expire()
            wanted = (user_id, provider, kind, scopes)
            for pending in self._pending.values():
                if pending.state in self._claimed:  # its link was used: no longer one to show
                    continue
                if (pending.user_id, pending.provider, pending.kind, pending.scopes) == wanted:
                    return pending.url
        return None

    def user_code(self, url: str) -> str | None:
        """The code to enter at `url`, when a pending device grant shows it."""
        with self._changed:
            return next((p.user_code for p in self._pending.values() if p.url == url and p.user_code), None)

    def take(self, provider: str, state: str | None, kinds: set[str], *, consume: bool = True) -> Pending | None:
        """The pending request `state` names, for `provider` and one of `kinds`; None when there is none (or,
        with `consume`, when it was claimed already). With `consume` it is claimed: single use, and still
        pending until `finish` (or `release`) ends it. Raises Expired when it outlived its time to live."""
        if not state:
            return None
        with self._changed:
            pending = self._pending.get(state)
            if pending is None or pending.provider != provider or pending.kind not in kinds:
                return None
            if state in self._claimed:
                return None
            if consume:
                self._claimed.add(state)
        if pending.expired:
            self.finish(pending, GrantOutcome.failed(_EXPIRED))
            raise Expired
        return pending

    def discard(self, pending: Pending) -> bool:
        """Remove a request; False when it was already gone (a form posted twice at once is saved once)."""
        with self._changed:
            return self._pending.pop(pending.state, None) is not None

    def release(self, pending: Pending, why: str) -> None:
        """End a claimed request that `finish` did not end (its handler raised), as a failure saying `why`."""
        with self._changed:
            if pending.state not in self._pending:
                return
        self.finish(pending, GrantOutcome.failed(why))

    def finish(self, pending: Pending, outcome: GrantOutcome) -> None:
        """Record how a request ended; a stored grant answers the user's other requests for the provider too."""
        key = (pending.user_id, pending.provider)
        with self._changed:
            self._outcomes[key] = outcome
            self._pending.pop(pending.state, None)
            self._claimed.discard(pending.state)
            if outcome.granted:
                for state in [s for s, p in self._pending.items() if (p.user_id, p.provider) == key]:
                    del self._pending[state]
            self._changed.notify_all()

    def pending(self, user_id: str | None = None) -> list[Pending]:
        with self._changed:
            self._expire()
            return [p for p in self._pending.values() if user_id is None or p.user_id == user_id]

    def wait(self, timeout: float | None = None, *, user_id: str | None = None) -> dict[str, GrantOutcome]:
        """Wait until every pending request (of `user_id`, or of everyone) ends or `timeout` passes. Returns
        provider -> outcome for the requests pending now (PENDING while still open) and those finished
        since the last `wait`: each outcome is reported once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            self._expire()
            mine = {(p.user_id, p.provider) for p in self._pending.values() if user_id in (None, p.user_id)}
            mine |= {key for key in self._outcomes if user_id in (None, key[0])}
            while True:
                self._expire()
                open_ = {(p.user_id, p.provider) for p in self._pending.values()} & mine
                if not open_:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._changed.wait(timeout=0.5 if remaining is None else min(remaining, 0.5))
            return {
                key[1]: GrantOutcome(GrantState.PENDING)
                if key in open_
                else self._outcomes.pop(key, GrantOutcome.failed("unknown"))
                for key in sorted(mine)
            }

    def clear(self) -> None:
        """Drop every pending request and wake the waiters (the Authenticator is closing)."""
        with self._changed:
            self._pending.clear()
            self._claimed.clear()
            self._changed.notify_all()

    def _expire(self) -> None:
        for state in [s for s, p in self._pending.items() if p.expired and s not in self._claimed]:
            expired = self._pending.pop(state)
            self._outcomes[(expired.user_id, expired.provider)] = GrantOutcome.failed(_EXPIRED)
