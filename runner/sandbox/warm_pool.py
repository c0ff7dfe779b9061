"""The host side of warm mode (opt-in per tool, `sandbox.warm_tools`, for tools with an `entrypoint.handler`):
containers per tool and user, each running `container/warm.py`, which imports the handler once and serves
calls one at a time as JSON lines carrying the request's id. One more is started when all are busy; idle ones
are removed after `sandbox.warm_idle_seconds`."""

from __future__ import annotations

import enum
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.sandbox.background import Background
from runner.sandbox.engine import Engine, Spec, Started
from runner.sandbox.limits import Limits
from runner.sandbox.stream import STDERR_KEEP


class WarmState(enum.Enum):
    """How a warm call ended."""

    OK = "ok"
    ERROR = "error"  # the handler raised
    BAD_REPLY = "bad_reply"  # something not of the protocol on its stdout
    TIMEOUT = "timeout"
    EXITED = "exited"  # the server died
    TOO_BIG = "too_big"  # the result is over the output limit


@dataclass(frozen=True)
class WarmReply:
    state: WarmState
    value: Any  # the result (OK), the error (ERROR), the first bytes of the bad line (BAD_REPLY)
    stderr: str


class WarmWorker:
    """A warm container serving one call at a time through JSON lines: on its channel where it has one, else on
    its attach stream."""

    def __init__(self, started: Started, key: tuple[Spec, str]):
        self.started = started
        self.key = key  # (spec, user id)
        self.last_used = time.monotonic()
        self.line = bytearray()  # protocol bytes read but not taken yet
        self.stderr = bytearray()
        self.broken = False

    def call(self, environment: Mapping[str, str], body: Any, limits: Limits) -> WarmReply:
        """Send one call and read its reply, on the channel or the attach stream alike. On the attach stream the
        reply is on stdout, and warm.py writes `\x1e<id>` on stderr after everything the handler wrote there (the
        two are not ordered between them): the call waits for both. A reply with another id (one the handler
        forged, or a late one) is skipped, and the container discarded after the call; anything else not of the
        protocol fails the call and discards the container."""
        nonce = os.urandom(16).hex()
        request = _ENCODER.encode({"id": nonce, "env": dict(environment), "body": body}).encode() + b"\n"
        deadline = time.monotonic() + limits.time_left
        self.stderr.clear()
        marker = b"\x1e" + nonce.encode() + b"\n"
        answers: list[dict[str, Any]] = []
        not_protocol: list[bytes] = []
        too_big = False
        marked = self.started.channel is None  # a channel hands on the output before the reply, without a marker
        stderr_done = not marked

        def take_lines() -> None:
            while not answers and not not_protocol and b"\n" in self.line:
                line, _, rest = bytes(self.line).partition(b"\n")
                self.line = bytearray(rest)
                answer = _parsed(line)
                if not isinstance(answer, dict):
                    not_protocol.append(line)
                elif answer.get("id") == nonce:
                    answers.append(answer)
                else:
                    self.broken = True

        def on_frame(kind: int, payload: bytes) -> bool:
            nonlocal too_big, stderr_done
            if kind == 2 and not (marked and stderr_done):
                self.stderr += payload
                if marked and self.stderr.endswith(marker):
                    del self.stderr[-len(marker) :]
                    stderr_done = True
                elif len(self.stderr) > 2 * STDERR_KEEP:
                    del self.stderr[:-STDERR_KEEP]
            elif kind == 1 and not answers:
                self.line += payload
                take_lines()
                too_big = not answers and len(self.line) > limits.output_limit
            return not (answers and stderr_done) and not not_protocol and not too_big

        stream = self.started.transport
        if not stream.send(request, deadline, on_frame):
            self.broken = True  # it did not read its request: stuck
            return WarmReply(WarmState.TIMEOUT, None, self._stderr())
        done = (answers and stderr_done) or not_protocol or too_big
        state = "stop" if done else stream.read_until(deadline, on_frame)
        if not_protocol:  # the handler wrote to the protocol's fd: nothing it says can be trusted now
            self.broken = True
            return WarmReply(WarmState.BAD_REPLY, not_protocol[0][:200].decode("utf-8", "replace"), self._stderr())
        if answers and stderr_done:
            return _answered(answers[0], self._stderr())
        self.broken = True
        if too_big:
            return WarmReply(WarmState.TOO_BIG, None, self._stderr())
        return WarmReply(WarmState.TIMEOUT if state == "timeout" else WarmState.EXITED, None, self._stderr())

    def _stderr(self) -> str:
        return bytes(self.stderr[-STDERR_KEEP:]).decode("utf-8", "replace")


# NaN and infinities, which JSON cannot hold, become null (as for function tools). One decoder: json.loads with
# an option builds a new one per call. The encoder has json.dumps's defaults, without the call around it.
_DECODER = json.JSONDecoder(parse_constant=lambda _constant: None)
_ENCODER = json.JSONEncoder()


def _parsed(line: bytes) -> Any:
    """A protocol line's JSON, or None."""
    try:
        return _DECODER.decode(line.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError too
        return None


def _answered(answer: dict[str, Any], stderr: str) -> WarmReply:
    if answer.get("ok"):
        return WarmReply(WarmState.OK, answer.get("value"), stderr)
    return WarmReply(WarmState.ERROR, answer.get("error") or "the handler failed", stderr)


class WarmPool:
    """The warm workers of one sandbox, per (spec, user); idle ones are swept on time by one timer."""

    def __init__(self, engine: Engine, background: Background, idle_seconds: float):
        self._engine, self._background, self._idle_seconds = engine, background, idle_seconds
        self._lock = threading.Lock()
        self._workers: dict[tuple[Spec, str], list[WarmWorker]] = {}
        self._busy: set[int] = set()  # id() of the workers serving a call now
        self._sweep: threading.Timer | None = None
        self._closed = False

    def acquire(self, spec: Spec, user_id: str) -> WarmWorker:
        """An idle live worker of (spec, user), or a new one; marked busy until `release`."""
        key = (spec, user_id)
        worker = None
        dead: list[WarmWorker] = []
        with self._lock:
            for candidate in list(self._workers.setdefault(key, [])):
                if id(candidate) in self._busy:
                    continue
                if not candidate.started.transport.alive():  # its container died between calls
                    self._workers[key].remove(candidate)
                    dead.append(candidate)
                    continue
                worker = candidate
                self._busy.add(id(worker))
                break
        for gone in dead:
            self._background.discard(gone.started)
        if worker is None:
            worker = WarmWorker(self._engine.start(spec), key)
            with self._lock:
                self._workers[key].append(worker)
                self._busy.add(id(worker))
        return worker

    def release(self, worker: WarmWorker) -> None:
        """After a call: idle again, or discarded when its protocol broke."""
        worker.last_used = time.monotonic()
        with self._lock:
            self._busy.discard(id(worker))
            workers = self._workers.get(worker.key, [])
            if worker.broken and worker in workers:
                workers.remove(worker)
        if worker.broken:
            worker.started.close()
            self._engine.kill(worker.started.id)
            self._background.discard(worker.started)
        self._schedule_sweep()

    def fill(self, spec: Spec, user_id: str, count: int) -> None:
        """Make sure `count` workers serve (spec, user); waits for the ones started."""
        key = (spec, user_id)
        with self._lock:
            missing = count - len(self._workers.setdefault(key, []))
        workers = self._background.map(lambda _: WarmWorker(self._engine.start(spec), key), max(missing, 0))
        with self._lock:
            self._workers[key].extend(workers)
        self._schedule_sweep()

    def groups(self) -> list[list[WarmWorker]]:
        """The workers, one list per (spec, user)."""
        with self._lock:
            return [list(workers) for workers in self._workers.values()]

    def _schedule_sweep(self) -> None:
        """Reap idle warm containers on time (calls do not look for them): one timer, set for the moment the least
        recently used idle worker reaches the idle limit."""
        with self._lock:
            if self._closed or self._sweep is not None:
                return
            idle = [w.last_used for ws in self._workers.values() for w in ws if id(w) not in self._busy]
            if not idle:
                return  # a busy worker schedules the sweep when its call ends
            delay = max(0.05, min(idle) + self._idle_seconds - time.monotonic())
            timer = self._sweep = threading.Timer(delay, self._run_sweep)
            timer.daemon = True
        timer.start()

    def _run_sweep(self) -> None:
        with self._lock:
            self._sweep = None
        self._reap_idle()
        self._schedule_sweep()

    def _reap_idle(self) -> None:
        """Remove warm containers nobody used for the idle limit."""
        limit = time.monotonic() - self._idle_seconds
        idle: list[WarmWorker] = []
        with self._lock:
            for workers in self._workers.values():
                for worker in [w for w in workers if w.last_used < limit and id(w) not in self._busy]:
                    workers.remove(worker)
                    idle.append(worker)
        for worker in idle:
            self._background.discard(worker.started)

    def close(self) -> None:
        """Stop sweeping and close the idle workers' streams (a busy one's belongs to its call, which discards
        it); the engine removes the containers."""
        with self._lock:
            self._closed = True
            if self._sweep is not None:
                self._sweep.cancel()
            idle = [w for workers in self._workers.values() for w in workers if id(w) not in self._busy]
            self._workers = {}
        for worker in idle:
            worker.started.close()
