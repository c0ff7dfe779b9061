"""The started-container pools: per tool image and limits, a few containers started ahead of calls, so a
call skips the ~0.4 s container start. Each container serves exactly one call."""

from __future__ import annotations

import threading
from collections import deque

from runner.sandbox.background import QUIET_START, Background
from runner.sandbox.engine import Engine, Spec, Started


class Pool:
    """Started containers of one spec, waiting for calls; refilled in the background, and grown to the
    largest burst of concurrent calls seen (up to `most`). Idle, starting and taken containers together are
    never more than `cap` (the tool's max_concurrent).

    A call that finds no idle container waits for one already being started, when one is not claimed by
    another waiting call (it is further along than a start of its own, and one start fewer competes for the
    CPU); else it starts its own. A start that a call waits for does not wait for a pause between calls."""

    def __init__(self, spec: Spec, size: int, most: int, cap: int, engine: Engine, background: Background):
        self.cap = cap
        self.spec, self.size, self.most = spec, min(size, cap), min(max(size, most), cap)
        self._engine, self._background = engine, background
        self.idle: deque[Started] = deque()
        self.starting = 0
        self.waiting = 0  # calls waiting for a container being started
        self.in_use = 0  # taken and not yet released: the concurrent calls of this spec
        self.lock = threading.Condition()
        self.closed = False

    def take(self) -> Started:
        with self.lock:
            self.in_use += 1
            self.size = max(self.size, min(self.in_use, self.most))  # the next burst finds them ready
        try:
            if not self.idle:  # a read without the lock: at worst a refill starts one call later
                self.refill()  # so that a start is in flight to wait for
            started = self._ready_one()
            return started if started is not None else self._engine.start(self.spec)
        except BaseException:
            self.release()
            raise

    def _ready_one(self) -> Started | None:
        """An idle container that is still alive, waiting for an unclaimed start in flight; None when there is
        neither (the caller starts its own)."""
        while True:
            with self.lock:
                if not self.idle and self.starting > self.waiting and not self.closed:
                    self.waiting += 1
                    try:
                        while not self.idle and self.starting >= self.waiting and not self.closed:
                            self.lock.wait()
                    finally:
                        self.waiting -= 1
                started = self.idle.popleft() if self.idle else None
            if started is None or started.stream.idle():
                return started
            self._background.discard(started)  # it died while waiting (engine restart, someone removed it)

    def release(self) -> None:
        """The call is over: replace its container now, not while it ran (a start is ~0.2 s of the engine's CPU,
        and the call's container needs it)."""
        with self.lock:
            self.in_use -= 1
        self.refill()

    def refill(self) -> None:
        with self.lock:
            wanted = min(self.size - len(self.idle), self.cap - self.in_use - len(self.idle)) - self.starting
            if self.closed or wanted <= 0:
                return
            self.starting += wanted
        for _ in range(wanted):
            self._background.submit(self._start_one)

    def _start_one(self) -> None:
        if not self.waiting:  # a read without the lock: at worst one start waits for a pause, or does not
            self._background.wait_quiet(QUIET_START)
        try:
            started = None if self.closed else self._engine.start(self.spec)
        except Exception:  # the next call starts its own container and reports the error
            started = None
        with self.lock:
            self.starting -= 1
            if started is not None and not self.closed:
                self.idle.append(started)
                started = None
            self.lock.notify_all()
        if started is not None:
            self._background.discard(started)

    def close(self) -> list[Started]:
        """Stop refilling; returns the idle containers, now the caller's to discard."""
        with self.lock:
            self.closed = True
            idle, self.idle = list(self.idle), deque()
            self.lock.notify_all()
        return idle


class Pools:
    """The pools of one sandbox, by spec. An edited tool's image changes: its old pools are dropped."""

    def __init__(self, size: int, most: int, engine: Engine, background: Background):
        self._size, self._most = size, most
        self._engine, self._background = engine, background
        self._lock = threading.Lock()
        self._pools: dict[Spec, Pool] = {}

    def get(self, spec: Spec, cap: int) -> Pool:
        with self._lock:
            pool = self._pools.get(spec)
            if pool is None:
                pool = self._pools[spec] = Pool(spec, self._size, self._most, cap, self._engine, self._background)
            stale = [s for s in self._pools if s.tool == spec.tool and s.image != spec.image]
            old_pools = [self._pools.pop(s) for s in stale]
        for old in old_pools:  # the tool was edited: its old containers are of no use any more
            for started in old.close():
                self._background.discard(started)
        return pool

    def of_tool(self, tool: str) -> list[Pool]:
        with self._lock:
            return [pool for spec, pool in self._pools.items() if spec.tool == tool]

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            for started in pool.close():
                started.close()  # the engine removes the containers
