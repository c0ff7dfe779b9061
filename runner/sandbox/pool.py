"""Containers: what one is created from, a started one waiting for its call, the pools that keep some
started per tool image and limits, and the owner labels that tell whether their runner still lives."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.sandbox.stream import _Stream

if TYPE_CHECKING:
    from runner.sandbox import Sandbox

# Background work (refilling pools, removing used containers) waits until no call is running, so it
# never takes CPU from a call, for at most this long (then it runs anyway: a busy runner still refills).
QUIET_START = 0.5
QUIET_REMOVE = 5.0
SETTLE_REMOVE = 0.1  # removals also wait for a pause of this long between calls


@dataclass(frozen=True)
class _Spec:
    """Everything a container of one pool is created from."""

    image: str
    tool: str
    limits_key: tuple[Any, ...]
    command: tuple[str, ...]
    mode: str  # "call" or "warm"


@dataclass
class _Started:
    """A started container with its attached stream, waiting for a call."""

    id: str
    stream: _Stream
    started: float = field(default_factory=time.monotonic)


def _process_start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def owner_label() -> str:
    """hostname:pid:start — enough to tell later whether the runner that made a container still lives."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start_ticks(os.getpid()) or 0}"


def _owner_alive(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine's (or an unreadable) label: never ours to judge
    ticks = _process_start_ticks(int(pid_text))
    return ticks is not None and (start in ("0", "") or ticks == start)


class _Pool:
    """Started containers of one spec, waiting for calls; refilled in the background."""

    def __init__(self, sandbox: Sandbox, spec: _Spec, size: int, most: int):
        self.sandbox, self.spec, self.size, self.most = sandbox, spec, size, max(size, most)
        self.idle: deque[_Started] = deque()
        self.starting = 0
        self.in_use = 0  # taken and not yet released: the concurrent calls of this spec
        self.lock = threading.Lock()
        self.closed = False

    def take(self) -> _Started:
        with self.lock:
            self.in_use += 1
            self.size = max(self.size, min(self.in_use, self.most))  # the next burst finds them ready
        while True:
            with self.lock:
                started = self.idle.popleft() if self.idle else None
            if started is None or started.stream.idle():
                break
            self.sandbox._discard(started)  # it died while waiting (engine restart, someone removed it)
        self.refill()
        if started is not None:
            return started
        try:
            return self.sandbox._start(self.spec)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        with self.lock:
            self.in_use -= 1

    def refill(self) -> None:
        with self.lock:
            wanted = self.size - len(self.idle) - self.starting
            if self.closed or wanted <= 0:
                return
            self.starting += wanted
        for _ in range(wanted):
            self.sandbox._background(self._start_one)

    def _start_one(self) -> None:
        self.sandbox._wait_quiet(QUIET_START)
        try:
            started = None if self.closed else self.sandbox._start(self.spec)
        except Exception:  # the next call starts its own container and reports the error
            started = None
        with self.lock:
            self.starting -= 1
            if started is not None and not self.closed:
                self.idle.append(started)
                started = None
        if started is not None:
            self.sandbox._discard(started)

    def close(self) -> list[_Started]:
        with self.lock:
            self.closed = True
            idle, self.idle = list(self.idle), deque()
        return idle
