"""The attach stream of a Pod: the Kubernetes channel protocol over a websocket, read with caps and a deadline.

The same interface as `stream.Stream` (the Docker attach socket), so the launcher exchange, the pools and the
warm pool use either. Each websocket message is one channel byte and a payload: 0 stdin, 1 stdout, 2 stderr,
3 the error channel (a Status when the stream ends). `v5.channel.k8s.io` adds 255, closing a channel, so stdin
can be closed; on `v4.channel.k8s.io` it cannot, and the launcher's framed input does not need it to be.
"""

from __future__ import annotations

import contextlib
import json
import select
import ssl
import time
from collections.abc import Callable
from typing import Any

STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255
V5 = "v5.channel.k8s.io"
CHUNK = 32 * 1024  # stdin is sent in messages of this size, output read between them
FRAME_WAIT = 5.0  # how long the rest of a frame whose first bytes arrived may take


class AttachStream:
    """One Pod's attach session (the kubernetes client's WSClient): writes stdin, hands stdout/stderr on."""

    def __init__(self, client: Any):
        self.client = client  # kubernetes.stream.ws_client.WSClient: keeps the connection
        self.ws = client.sock  # websocket-client's WebSocket
        self.protocol: str = client.subprotocol or ""
        self.eof = False
        self.status: dict[str, Any] | None = None  # the error channel's Status, once the stream ended

    def close(self) -> None:
        """Drop the connection now (no closing handshake to wait for: the Pod is discarded anyway)."""
        self.eof = True
        with contextlib.suppress(Exception):
            self.ws.shutdown()

    def send(self, data: bytes, deadline: float, on_frame: Callable[[int, bytes], bool] | None = None) -> bool:
        """Write all of `data` on stdin, reading output meanwhile (a tool may answer before it reads its input).
        False when the deadline passed first."""
        view = memoryview(data)
        while view:
            while not self.eof and self._readable(0):  # what the tool said so far
                if not self._handle(self._frame(), on_frame):
                    return True  # the tool is done (or must stop): what it did not read does not matter
            if self.eof:
                return True  # the tool is gone
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self.ws.settimeout(left)
                self.ws.send_binary(bytes([STDIN]) + bytes(view[:CHUNK]))
            except TimeoutError:
                return False
            except Exception:  # the session ended: the tool exited or stopped reading
                return True
            view = view[CHUNK:]
        return True

    def idle(self) -> bool:
        """True when nothing waits to be read: a pooled launcher writes nothing before its call."""
        return not self.eof and not self._readable(0)

    def alive(self) -> bool:
        """False once the session ended; output since the last call is dropped (see `Stream.alive`)."""
        for _ in range(64):
            if self.eof or not self._readable(0):
                break
            self._frame()
        return not self.eof

    def read_until(self, deadline: float, on_frame: Callable[[int, bytes], bool]) -> str:
        """Read until the session ends ("eof"), `on_frame` returns False ("stop") or the deadline ("timeout")."""
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            if self._readable(left) and not self._handle(self._frame(), on_frame):
                return "stop"
        return "eof"

    def _handle(self, frame: tuple[int, bytes] | None, on_frame: Callable[[int, bytes], bool] | None) -> bool:
        if frame is None or on_frame is None or frame[0] not in (STDOUT, STDERR):
            return True
        return on_frame(*frame)

    def _readable(self, timeout: float) -> bool:
        sock = self.ws.sock
        if sock is None:
            self.eof = True
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():  # a TLS record already decrypted
            return True
        try:
            return bool(select.select([sock], [], [], max(timeout, 0))[0])
        except (OSError, ValueError):
            self.eof = True
            return False

    def _frame(self) -> tuple[int, bytes] | None:
        """The next message as (channel, payload); None for a control message or the end of the session."""
        import websocket

        try:
            self.ws.settimeout(FRAME_WAIT)
            opcode, frame = self.ws.recv_data_frame(True)
        except Exception:  # closed, reset, or a frame cut short
            self.eof = True
            return None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self.eof = True
            return None
        data = frame.data if opcode in (websocket.ABNF.OPCODE_BINARY, websocket.ABNF.OPCODE_TEXT) else b""
        if isinstance(data, str):
            data = data.encode()
        if not data or data[0] == CLOSE:
            return None
        if data[0] == ERROR and len(data) > 1:
            with contextlib.suppress(ValueError):
                self.status = json.loads(data[1:])
            return None
        return data[0], bytes(data[1:])
