"""The consent state machine: authorization requests pending, and how each ended, for `wait` to report.

A request is opened when its URL is shown, claimed (single use) when its callback arrives, and
finished with a `GrantOutcome`. A claimed request stays pending while its code is exchanged: `wait`
reports its outcome, not "unknown", however long the token endpoint takes. Expired requests finish as
failures. One condition guards it all, so a thread in `wait` wakes when any request ends.

Requests answered at the callback server (all but device grants) are also shared through the store, so
any pocket process of this user can hand out URLs while another holds the callback port: the holder
claims a request it did not open from the store (once, across processes), completes it, and records the
outcome there; the process that opened it reads that outcome while it waits (every half second).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

from runner.auth.oauth import Pending
from runner.auth.results import GrantOutcome, GrantState
from runner.errors import SettingsError

if TYPE_CHECKING:
    from runner.auth.store import CredentialStore

_EXPIRED = "the authorization request expired"
_LOST = "the pocket process that received the callback did not finish it"
_LOST_AFTER = 120.0  # seconds past its expiry that a request claimed by another process may still take


class Expired(Exception):
    """The request a state names outlived its time to live (its outcome is already recorded)."""


def _document(pending: Pending) -> bytes:
    fields = asdict(pending)
    fields["scopes"] = list(pending.scopes)
    return json.dumps(fields).encode()


def _from_document(document: bytes) -> Pending:
    fields = json.loads(document)
    fields["scopes"] = tuple(fields["scopes"])
    return Pending(**fields)


def _outcome_text(outcome: GrantOutcome) -> str:
    return json.dumps({"state": outcome.state.value, "declined": list(outcome.declined), "reason": outcome.reason})


def _outcome_from(text: str) -> GrantOutcome:
    fields = json.loads(text)
    return GrantOutcome(GrantState(fields["state"]), declined=tuple(fields["declined"]), reason=fields["reason"])


class Consent:
    """Pending authorization requests by state, and the outcomes not yet reported, per (user, provider).
    With `shared` (the store, opened on first need) they are shared with the other processes using it."""

    def __init__(self, shared: Callable[[], CredentialStore] | None = None) -> None:
        self._pending: dict[str, Pending] = {}
        self._claimed: set[str] = set()  # states whose callback arrived, being exchanged: used, not yet ended
        self._elsewhere: set[str] = set()  # of those, the ones another process claimed
        self._foreign: set[str] = set()  # states opened by another process, taken here from the store
        self._outcomes: dict[tuple[str, str], GrantOutcome] = {}
        self._changed = threading.Condition()
        self._shared = shared

    def _store(self, pending: Pending) -> CredentialStore | None:
        """The shared store for a request whose callback or form lands at the callback server."""
        return None if self._shared is None or pending.kind == "device" else self._shared()

    def open(self, pending: Pending) -> None:
        """Register a request whose URL is about to be shown; an earlier unreported outcome is dropped."""
        store = self._store(pending)
        if store is not None:
            expires_at = pending.created_at + pending.ttl
            store.put_request(pending.state, pending.user_id, pending.provider, _document(pending), expires_at)
        with self._changed:
            self._pending[pending.state] = pending
            self._outcomes.pop((pending.user_id, pending.provider), None)

    def find(self, user_id: str, provider: str, kind: str, scopes: tuple[str, ...]) -> str | None:
        """The URL of the same request while it is pending, so asking twice shows one link."""
        self._sync()
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
        """The pending request `state` names, for `provider` and one of `kinds`, opened by this process or
        (shared through the store) by another; None when there is none (or, with `consume`, when it was
        claimed already, here or in any process). With `consume` it is claimed: single use, and still
        pending until `finish` (or `release`) ends it. Raises Expired when it outlived its time to live."""
        if not state:
            return None
        with self._changed:
            pending = self._pending.get(state)
            if pending is not None and (state in self._claimed or pending.provider != provider):
                return None
        if pending is None:
            pending = self._take_shared(provider, state, kinds, consume=consume)
            if pending is None:
                return None
        elif pending.kind not in kinds:
            return None
        elif consume:
            store = self._store(pending)
            if store is not None and store.claim_request(state) is None:  # its callback landed elsewhere
                return None
            with self._changed:
                if state in self._claimed:
                    return None
                self._claimed.add(state)
        if pending.expired:
            self.finish(pending, GrantOutcome.failed(_EXPIRED))
            raise Expired
        return pending

    def _take_shared(self, provider: str, state: str, kinds: set[str], *, consume: bool) -> Pending | None:
        """A request another process opened, from the store (claimed there with `consume`)."""
        if self._shared is None:
            return None
        store = self._shared()
        document = store.peek_request(state)
        if document is None:
            return None
        pending = _from_document(document)
        if pending.provider != provider or pending.kind not in kinds or pending.kind == "device":
            return None
        if consume and store.claim_request(state) is None:
            return None
        with self._changed:
            self._foreign.add(state)
        return pending

    def discard(self, pending: Pending) -> bool:
        """Remove a request; False when it was already gone (a form posted twice at once, in one process or
        in two, is saved once)."""
        store = self._store(pending)
        if store is not None and store.claim_request(pending.state) is None:
            return False  # submitted in another process: its outcome comes through the store
        with self._changed:
            return self._pending.pop(pending.state, None) is not None or pending.state in self._foreign

    def release(self, pending: Pending, why: str) -> None:
        """End a claimed request that `finish` did not end (its handler raised), as a failure saying `why`."""
        with self._changed:
            if pending.state not in self._pending and pending.state not in self._foreign:
                return
        self.finish(pending, GrantOutcome.failed(why))

    def finish(self, pending: Pending, outcome: GrantOutcome) -> None:
        """Record how a request ended; a stored grant answers the user's other requests for the provider too.
        The outcome of a request another process opened goes to the store, for that process to report."""
        store = self._store(pending)
        if store is not None:
            store.end_request(pending.state, _outcome_text(outcome))
        with self._changed:
            if pending.state in self._foreign:
                self._foreign.discard(pending.state)
                return
            self._end(pending, outcome)

    def _end(self, pending: Pending, outcome: GrantOutcome) -> None:
        key = (pending.user_id, pending.provider)
        self._outcomes[key] = outcome
        self._pending.pop(pending.state, None)
        self._claimed.discard(pending.state)
        self._elsewhere.discard(pending.state)
        if outcome.granted:
            for state in [s for s, p in self._pending.items() if (p.user_id, p.provider) == key]:
                del self._pending[state]
        self._changed.notify_all()

    def _sync(self) -> None:
        """Take in what other processes did with this process's requests: claimed there, or ended."""
        if self._shared is None:
            return
        with self._changed:
            mine = [  # those being exchanged here end here
                p
                for s, p in self._pending.items()
                if p.kind != "device" and (s not in self._claimed or s in self._elsewhere)
            ]
        if not mine:
            return
        store = self._shared()
        progress = {pending.state: store.request_progress(pending.state) for pending in mine}
        with self._changed:
            for pending in mine:
                seen = progress[pending.state]
                if seen is None or self._pending.get(pending.state) is not pending:
                    continue
                claimed, outcome = seen
                if outcome is not None:
                    self._end(pending, _outcome_from(outcome))
                elif claimed and pending.state not in self._claimed:
                    self._claimed.add(pending.state)
                    self._elsewhere.add(pending.state)

    def pending(self, user_id: str | None = None) -> list[Pending]:
        self._sync()
        with self._changed:
            self._expire()
            return [p for p in self._pending.values() if user_id is None or p.user_id == user_id]

    def wait(self, timeout: float | None = None, *, user_id: str | None = None) -> dict[str, GrantOutcome]:
        """Wait until every pending request (of `user_id`, or of everyone) ends or `timeout` passes. Returns
        provider -> outcome for the requests pending now (PENDING while still open) and those finished
        since the last `wait`: each outcome is reported once. Requests completed by another process (the one
        holding the callback port) are seen within half a second."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._sync()
        with self._changed:
            self._expire()
            mine = {(p.user_id, p.provider) for p in self._pending.values() if user_id in (None, p.user_id)}
            mine |= {key for key in self._outcomes if user_id in (None, key[0])}
        while True:
            with self._changed:
                self._expire()
                open_ = {(p.user_id, p.provider) for p in self._pending.values()} & mine
                remaining = None if deadline is None else deadline - time.monotonic()
                if not open_ or (remaining is not None and remaining <= 0):
                    return {
                        key[1]: GrantOutcome(GrantState.PENDING)
                        if key in open_
                        else self._outcomes.pop(key, GrantOutcome.failed("unknown"))
                        for key in sorted(mine)
                    }
                self._changed.wait(timeout=0.5 if remaining is None else min(remaining, 0.5))
            self._sync()

    def clear(self) -> None:
        """Drop every pending request and wake the waiters (the Authenticator is closing). Shared requests
        not yet claimed are withdrawn from the store: their URLs end with this process."""
        with self._changed:
            withdrawn = [p for s, p in self._pending.items() if p.kind != "device" and s not in self._claimed]
            self._pending.clear()
            self._claimed.clear()
            self._elsewhere.clear()
            self._changed.notify_all()
        if self._shared is None or not withdrawn:
            return
        try:
            store = self._shared()
            for pending in withdrawn:
                store.forget_request(pending.state)
        except SettingsError:  # closing: a store gone bad (or unreachable) keeps only expiring rows
            pass

    def _expire(self) -> None:
        now = time.time()
        for state, pending in list(self._pending.items()):
            lost = state in self._elsewhere and now > pending.created_at + pending.ttl + _LOST_AFTER
            if (pending.expired and state not in self._claimed) or lost:
                self._pending.pop(state)
                self._claimed.discard(state)
                self._elsewhere.discard(state)
                self._outcomes[(pending.user_id, pending.provider)] = GrantOutcome.failed(_LOST if lost else _EXPIRED)
