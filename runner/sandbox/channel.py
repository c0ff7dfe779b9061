"""A container's direct line to the runner: a unix socket the runner listens on, in a folder of its own that
is bind-mounted read-only into that one container. Its program (container/pocket_channel.py) connects to it twice
as it starts. A warm server (warm.py) gets requests and sends replies on the first connection, and what the
handler writes (its fds 1 and 2) goes on the second, straight from the handler's process, so nothing is lost when
it dies. A prestarted launcher (prestart.py) gets the call on the first, which is also the tool's stdout, and the
tool's stderr goes on the second. `Channel` reads the two like an attach stream's stdout and stderr, and the call
skips dockerd's copy of the attach stream (a round trip of 0.27 ms instead of 0.74 ms on this machine:
benchmarks/bench_sandbox.py, "channel echo" and "attach echo").

Once the program is connected, the socket's name and folder are removed: the mount is an empty folder from then
on, and nothing else can connect. Only on a local Docker engine under runc: gVisor does not let a sandbox connect
to a host's socket, and a remote engine or a cluster has no folder of this host to mount. There, and whenever the
program cannot connect, calls go over the attach stream.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from runner.sandbox.stream import Stream

MOUNT = "/pocket-channel"  # where the folder is in the container
SOCKET_NAME = "s"
VARIABLE = "POCKET_CHANNEL"  # tells the program (warm.py, prestart.py) where to connect
MAX_PATH = 100  # a unix socket's path is at most 107 bytes on Linux
CONNECT_SECONDS = 60.0  # how long a container's program may take to start and connect
GREETING = b"+"  # sent on a connection accepted: one the runner gave up on is reset instead, and the program knows


class Channels:
    """The folders of one engine's channels, under one private folder (mode 0700: no other user of this host
    reaches a socket in it), removed at close. After one container could not use its channel (an engine that
    cannot mount this host's folders: Docker Desktop, or an engine of another host behind a unix socket), the
    engine's warm containers go without."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._root: Path | None = None
        self._failed = False

    def failed(self) -> None:
        self._failed = True

    def open(self) -> Listener | None:
        """A listener for one container; None when channels failed here, or its path would be too long."""
        with self._lock:
            if self._failed:
                return None
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="pocket-channels-"))
        folder = Path(tempfile.mkdtemp(dir=self._root))
        if len(str(folder / SOCKET_NAME)) > MAX_PATH:
            folder.rmdir()
            return None
        return Listener(folder)

    def close(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


class Listener:
    """The runner's end of one container's channel, until the program in it connects."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.chmod(0o711)  # the container's user (65534) passes through it to the socket, but cannot list it
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.bind(str(folder / SOCKET_NAME))
        (folder / SOCKET_NAME).chmod(0o666)  # connecting takes write permission on the socket
        self._socket.listen(2)

    @property
    def binds(self) -> list[str]:
        """The container's mount of the folder, as the engine's HostConfig.Binds."""
        return [f"{self.folder}:{MOUNT}:ro"]

    @property
    def environment(self) -> dict[str, str]:
        return {VARIABLE: f"{MOUNT}/{SOCKET_NAME}"}

    def accept(self, stream: Stream, seconds: float = CONNECT_SECONDS) -> Channel | None:
        """The program's two connections; None when the container said something on its attach stream first
        (its program could not connect and serves there) or ended, or after `seconds`. The listener is gone after,
        and a connection it still held is reset: the program, never greeted, serves on the attach stream then."""
        deadline = time.monotonic() + seconds
        connections: list[socket.socket] = []
        try:
            while len(connections) < 2 and (left := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([self._socket, stream.sock], [], [], left)
                if self._socket in readable:
                    connections.append(self._socket.accept()[0])
                elif readable:
                    break
            if len(connections) == 2:
                connections[0].sendall(GREETING)  # the program serves on the channel once it has this
                return Channel(*connections)
        except OSError:
            pass
        finally:
            self.close()
        for connection in connections:
            connection.close()
        return None

    def close(self) -> None:
        self._socket.close()
        with contextlib.suppress(OSError):
            os.unlink(self.folder / SOCKET_NAME)
        with contextlib.suppress(OSError):
            self.folder.rmdir()


class Channel:
    """A program's two connections, read as an attach stream is (the `Stream` interface): the first as stdout's
    frames (kind 1: a warm server's replies, a prestarted tool's stdout), the second as stderr's (kind 2). Before
    anything read of the first, what is queued of the second is handed on: a socket's write is in the runner's
    queue when it returns, so what the handler wrote before its reply comes before it, with no marker to wait for
    (a second wake-up per call)."""

    def __init__(self, replies: socket.socket, output: socket.socket):
        self._replies, self._output = replies, output
        self._by_fd = {replies.fileno(): (replies, 1), output.fileno(): (output, 2)}
        self._readable = select.poll()  # registered once: cheaper per call than select's lists
        self._output_queued = select.poll()  # asked before a recv: a recv of nothing raises (and most calls print none)
        self._output_queued.register(output, select.POLLIN)
        for connection, _kind in self._by_fd.values():
            connection.setblocking(False)
            self._readable.register(connection, select.POLLIN)
        self.eof = False

    def send(self, data: bytes, deadline: float, on_frame: Callable[[int, bytes], bool] | None = None) -> bool:
        """Write all of `data`, reading meanwhile when the server does not take it at once; False at the
        deadline."""
        view = memoryview(data)
        while view:
            try:
                view = view[self._replies.send(view[:65536]) :]
                continue
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return True  # the server is gone
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select(list(self._by_fd), [self._replies], [], left)
            for fd in readable:
                if not self._read(fd, on_frame):
                    return True  # the server is gone, or the call must stop
        return True

    def read_until(self, deadline: float, on_frame: Callable[[int, bytes], bool]) -> str:
        """Read until the server is gone ("eof"), `on_frame` returns False ("stop") or the deadline ("timeout")."""
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            for fd, _event in self._readable.poll(left * 1000 + 1):
                if not self._read(fd, on_frame):
                    return "eof" if self.eof else "stop"
        return "eof"

    def alive(self) -> bool:
        """False once the server is gone; what its handler wrote since the last call belongs to none: dropped."""
        try:
            for _ in range(64):  # bounded: a handler that never stops writing is still alive
                ready = self._readable.poll(0)
                if not ready:
                    return True
                for fd, _event in ready:
                    if not self._read(fd, None) and self.eof:
                        return False
            return True
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        for connection, _kind in self._by_fd.values():
            connection.close()

    def _read(self, fd: int, on_frame: Callable[[int, bytes], bool] | None) -> bool:
        """Hand on what one connection holds (the output queued first, before replies); False once the server is
        gone or `on_frame` asks to stop."""
        connection, kind = self._by_fd[fd]
        if kind == 1:
            while self._output_queued.poll(0) and (queued := _received(self._output)) is not None:
                if not self._hand_on(2, queued, on_frame):
                    return False
        chunk = _received(connection)
        return chunk is None or self._hand_on(kind, chunk, on_frame)

    def _hand_on(self, kind: int, chunk: bytes, on_frame: Callable[[int, bytes], bool] | None) -> bool:
        if not chunk:
            self.eof = True
            return False
        return on_frame is None or on_frame(kind, chunk)


def _received(connection: socket.socket) -> bytes | None:
    """What a connection holds now (b"" once closed), or None when nothing is queued."""
    try:
        return connection.recv(65536)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
