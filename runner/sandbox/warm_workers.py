"""The host side of warm mode: a warm container (running `runner/warm.py`) serving one call at a time."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from runner.sandbox.limits import Limits
from runner.sandbox.pool import _Started
from runner.sandbox.stream import STDERR_KEEP


class _WarmWorker:
    """A warm container serving one call at a time through JSON lines."""

    def __init__(self, started: _Started):
        self.started = started
        self.last_used = time.monotonic()
        self.line = bytearray()
        self.stderr = bytearray()
        self.broken = False

    def call(self, environment: Mapping[str, str], body: Any, limits: Limits) -> tuple[str, Any, str]:
        """("ok"|"error"|"bad_reply"|"timeout"|"exited"|"too_big", value or error, stderr tail).

        The reply is one JSON line on stdout carrying the request's id; warm.py then writes `\x1e<id>` on
        stderr, so everything the handler wrote to stderr has arrived too (the two streams are not ordered
        between them). A line that is not JSON fails the call; a reply with another id (one the handler
        forged, or a late one) is skipped. Either way the protocol is corrupted: the container is discarded.
        """
        self.stderr.clear()
        nonce = uuid.uuid4().hex
        marker = b"\x1e" + nonce.encode() + b"\n"
        request = json.dumps({"id": nonce, "env": dict(environment), "body": body}).encode() + b"\n"
        deadline = time.monotonic() + limits.timeout
        answers: list[dict[str, Any]] = []
        not_protocol: list[bytes] = []
        too_big = False
        stderr_done = False

        def take_lines() -> None:
            while not answers and not not_protocol and b"\n" in self.line:
                line, _, rest = bytes(self.line).partition(b"\n")
                self.line = bytearray(rest)
                try:  # NaN and infinities, which JSON cannot hold, become null (as for function tools)
                    answer = json.loads(line, parse_constant=lambda _constant: None)
                except ValueError:
                    answer = None
                if not isinstance(answer, dict):
                    not_protocol.append(line)
                elif answer.get("id") == nonce:
                    answers.append(answer)
                else:
                    self.broken = True

        def on_frame(kind: int, payload: bytes) -> bool:
            nonlocal too_big, stderr_done
            if kind == 2 and not stderr_done:
                self.stderr += payload
                if self.stderr.endswith(marker):
                    del self.stderr[-len(marker) :]
                    stderr_done = True
                elif len(self.stderr) > 2 * STDERR_KEEP:
                    del self.stderr[:-STDERR_KEEP]
            elif kind == 1 and not answers:
                self.line += payload
                take_lines()
                too_big = not answers and len(self.line) > limits.output_limit
            return not (answers and stderr_done) and not not_protocol and not too_big

        stream = self.started.stream
        if not stream.send(request, deadline, on_frame):
            return "timeout", None, self._stderr()
        done = (answers and stderr_done) or not_protocol or too_big
        state = "stop" if done else stream.read_until(deadline, on_frame)
        if not_protocol:  # the handler wrote to the protocol's fd: nothing it says can be trusted now
            self.broken = True
            return "bad_reply", not_protocol[0][:200].decode("utf-8", "replace"), self._stderr()
        if answers and stderr_done:
            if answers[0].get("ok"):
                return "ok", answers[0].get("value"), self._stderr()
            return "error", answers[0].get("error") or "the handler failed", self._stderr()
        self.broken = True
        if too_big:
            return "too_big", None, self._stderr()
        return ("timeout" if state == "timeout" else "exited"), None, self._stderr()

    def _stderr(self) -> str:
        return bytes(self.stderr[-STDERR_KEEP:]).decode("utf-8", "replace")
