"""Background work (refilling pools, removing used containers) that waits until no call is running, so it
does not take CPU from calls, for a bounded time (then it runs anyway: a busy runner still refills)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from runner.sandbox.engine import Engine, Started

T = TypeVar("T")

QUIET_START = 0.5  # a pool's refill waits at most this long for a pause between calls
QUIET_REMOVE = 5.0  # a removal waits at most this long
SETTLE_REMOVE = 0.1  # removals also wait for a pause of this long between calls


class Background:
    """Counts the calls running now and runs work in the pauses between them."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pocket-sandbox")
        self._reaper = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pocket-reaper")
        self._lock = threading.Lock()  # entered as itself on a call's path: a Condition's enter and exit are Python
        self._quiet = threading.Condition(self._lock)
        self._active = 0  # calls running now
        self._waiting = 0  # threads in wait_quiet: the last call to end wakes them
        self._last_call_end = 0.0
        self.closed = False

    def call(self) -> Background:
        """`with background.call():` around each call: background work waits while any runs. (A class's enter and
        exit, not a generator's: this is on every call's path, twice.)"""
        return self

    def __enter__(self) -> None:
        with self._lock:
            self._active += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._active -= 1
            self._last_call_end = time.monotonic()
            if not self._active and self._waiting:
                self._quiet.notify_all()

    def wait_quiet(self, limit: float, settle: float = 0.0) -> None:
        """Block until no call has run for `settle` seconds (or `limit` seconds passed, or this closes)."""
        deadline = time.monotonic() + limit
        with self._quiet:
            self._waiting += 1
            try:
                while not self.closed:
                    now = time.monotonic()
                    idle_for = now - self._last_call_end
                    if not self._active and idle_for >= settle:
                        return
                    left = deadline - now
                    if left <= 0:
                        return
                    self._quiet.wait(min(left, settle - idle_for) if not self._active else left)
            finally:
                self._waiting -= 1

    def submit(self, function: Callable[[], None]) -> None:
        if not self.closed:
            with contextlib.suppress(RuntimeError):  # shut down meanwhile
                self._executor.submit(function)

    def map(self, function: Callable[[int], T], count: int) -> list[T]:
        """Run `function(i)` for i < count on the background threads (not waiting for quiet), and wait."""
        return list(self._executor.map(function, range(count)))

    def discard(self, started: Started) -> None:
        """Close the stream and remove the container, in a pause between calls. Closing the stream takes about a
        millisecond (dockerd is told): that too waits for the pause, not to compete with the call's last steps."""
        try:
            self._reaper.submit(self._remove_later, started)
        except RuntimeError:  # the reaper is shut down: remove now
            started.close()
            self._engine.remove(started.id)

    def _remove_later(self, started: Started) -> None:
        self.wait_quiet(QUIET_REMOVE, SETTLE_REMOVE)
        started.close()
        self._engine.remove(started.id)

    def stop_waiting(self) -> None:
        """Work waiting for a pause runs now (the sandbox is closing)."""
        self.closed = True
        with self._quiet:
            self._quiet.notify_all()

    def close(self) -> None:
        """Drop the work not started and wait for the rest."""
        self.stop_waiting()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._reaper.shutdown(wait=True)
