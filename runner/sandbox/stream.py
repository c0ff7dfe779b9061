"""The attach stream: docker's multiplexed frames, read with caps and a deadline."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

STDERR_KEEP = 64 * 1024  # the stderr tail kept per call
DRAIN_FACTOR = 16  # output past the cap is read and dropped up to this many caps, then the tool is killed
# The launcher's closing line at the end of a stream: nonce, exit status. One pattern for every call (one built
# around each call's nonce cost a regex compilation per call, 0.5 ms).
_CLOSING_LINE = re.compile(b"\x1e([^\x1e ]+) ([0-9]{1,3})\n$")


class Stream:
    """One attached container connection: writes stdin, demultiplexes stdout/stderr frames."""

    def __init__(self, raw: Any):
        self.raw = raw  # keeps the HTTP response (and so the connection) alive
        self.sock: socket.socket = raw._sock if hasattr(raw, "_sock") else raw
        self.sock.setblocking(False)
        self.pending = bytearray()  # bytes read but not parsed yet
        self.eof = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(Exception):
            self.raw.close()

    def send(self, data: bytes, deadline: float, on_frame: Callable[[int, bytes], bool] | None = None) -> bool:
        """Write all of `data`, reading output meanwhile (a tool may answer before it reads all its stdin)."""
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, writable, _ = select.select([self.sock], [self.sock], [], left)
            if readable and not self.eof and not self._read_once(on_frame):
                return True  # the tool is gone or done (or must stop): what it did not read does not matter
            if writable:
                try:
                    sent = self.sock.send(view[:65536])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return True  # the container closed its stdin: it exited or does not read
                view = view[sent:]
        return True

    def idle(self) -> bool:
        """True when nothing waits to be read: a pooled launcher writes nothing until its call, so anything
        there (usually the end of the stream) means the container is of no use."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            return not readable
        except (OSError, ValueError):
            return False

    def alive(self) -> bool:
        """False once the container closed the stream; output written since the last call is dropped (a warm
        handler's background thread may log between calls: that belongs to no call, and is no death)."""
        try:
            for _ in range(64):  # bounded: a handler that never stops writing is still alive
                if not select.select([self.sock], [], [], 0)[0]:
                    break
                if not self._read_once(None) and self.eof:
                    return False
            return True
        except (OSError, ValueError):
            return False

    def _read_once(self, on_frame: Callable[[int, bytes], bool] | None) -> bool:
        try:
            chunk = self.sock.recv(65536)  # a 256 KiB buffer cost 20 us per recv to allocate, 64 KiB 3 us
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.pending += chunk
        return self._parse(on_frame)

    def _parse(self, on_frame: Callable[[int, bytes], bool] | None) -> bool:
        """Hand complete frames to `on_frame`; False when it asks to stop."""
        pending = self.pending
        offset = 0
        keep_going = True
        while len(pending) - offset >= 8:
            kind, size = struct.unpack_from(">BxxxL", pending, offset)
            if len(pending) - offset - 8 < size:
                break
            payload = bytes(pending[offset + 8 : offset + 8 + size])
            offset += 8 + size
            if on_frame is not None and not on_frame(kind, payload):
                keep_going = False
                break
        del pending[:offset]
        return keep_going

    def read_until(self, deadline: float, on_frame: Callable[[int, bytes], bool]) -> str:
        """Read frames until EOF ("eof"), `on_frame` returns False ("stop") or the deadline ("timeout")."""
        if self.pending and not self._parse(on_frame):
            return "stop"
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            readable, _, _ = select.select([self.sock], [], [], left)
            if readable and not self._read_once(on_frame):
                if self.eof:
                    break
                return "stop"
        return "eof"


class Output:
    """stdout kept up to a cap (the rest counted and dropped), stderr's tail kept.

    With a nonce, it also watches both streams for the launcher's closing line (`\\x1e<nonce> <status>`),
    which carries the tool's exit status: `finished` once both streams delivered it.
    """

    def __init__(self, cap: int, nonce: str = ""):
        self.cap = cap
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.dropped = 0
        self.nonce = nonce.encode()
        self.tails = {1: bytearray(), 2: bytearray()}
        self.statuses: dict[int, int] = {}

    @property
    def finished(self) -> bool:
        return len(self.statuses) == 2

    @property
    def exit_code(self) -> int | None:
        return self.statuses.get(1)

    def on_frame(self, kind: int, payload: bytes) -> bool:
        if kind not in (1, 2) or kind in self.statuses:
            return True  # stdin echo, or output after the closing line: not the tool's result
        if kind == 2:
            self.stderr += payload
            if len(self.stderr) > 2 * STDERR_KEEP:
                del self.stderr[:-STDERR_KEEP]
        else:
            room = self.cap - len(self.stdout)
            if room > 0:
                self.stdout += payload[:room]
            self.dropped += max(0, len(payload) - max(room, 0))
        if self.nonce:
            tail = self.tails[kind]
            tail += payload[-64:]
            del tail[:-64]
            match = _CLOSING_LINE.search(tail)
            if match and match.group(1) == self.nonce:
                self.statuses[kind] = int(match.group(2))
                self._strip(kind, len(match.group(0)))
                return not self.finished
        return kind == 2 or self.dropped <= DRAIN_FACTOR * self.cap

    def _strip(self, kind: int, size: int) -> None:
        if kind == 2:
            del self.stderr[len(self.stderr) - size :]
            return
        total = len(self.stdout) + self.dropped - size
        if total <= len(self.stdout):
            del self.stdout[total:]
            self.dropped = 0
        else:
            self.dropped = total - len(self.stdout)

    def stderr_text(self) -> str:
        return bytes(self.stderr[-STDERR_KEEP:]).decode("utf-8", "replace")
