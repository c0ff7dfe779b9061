"""A warm container's direct line to the runner: a unix socket the runner listens on, in a folder of its own that
is bind-mounted read-only into that one container. The warm server connects to it as it starts, and its calls
then skip dockerd's copy of the attach stream (a round trip of 0.12 ms instead of 0.74 ms on this machine:
benchmarks/bench_sandbox.py, "attach echo").

Once the server is connected, the socket's name and folder are removed: the mount is an empty folder from then
on, and nothing else can connect. Only on a local Docker engine under runc: gVisor does not let a sandbox connect
to a host's socket, and a remote engine or a cluster has no folder of this host to mount. There, and whenever the
server cannot connect, warm mode speaks over the attach stream as before.
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
from pathlib import Path

from runner.sandbox.stream import Stream

MOUNT = "/pocket-channel"  # where the folder is in the container
SOCKET_NAME = "s"
VARIABLE = "POCKET_CHANNEL"  # tells warm.py where to connect
MAX_PATH = 100  # a unix socket's path is at most 107 bytes on Linux
CONNECT_SECONDS = 60.0  # how long a warm server may take to start and connect


class Channels:
    """The folders of one engine's channels, under one private folder (mode 0700: no other user of this host
    reaches a socket in it), removed at close."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._root: Path | None = None

    def open(self) -> Listener | None:
        """A listener for one container, or None when its path would be too long for a unix socket."""
        with self._lock:
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
    """The runner's end of one container's channel, until the warm server in it connects."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.chmod(0o711)  # the container's user (65534) passes through it to the socket, but cannot list it
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.bind(str(folder / SOCKET_NAME))
        (folder / SOCKET_NAME).chmod(0o666)  # connecting takes write permission on the socket
        self._socket.listen(1)

    @property
    def binds(self) -> dict[str, dict[str, str]]:
        return {str(self.folder): {"bind": MOUNT, "mode": "ro"}}

    @property
    def environment(self) -> dict[str, str]:
        return {VARIABLE: f"{MOUNT}/{SOCKET_NAME}"}

    def accept(self, stream: Stream, seconds: float = CONNECT_SECONDS) -> socket.socket | None:
        """The warm server's connection; None when the container said something on its attach stream first (its
        server could not connect and serves there) or ended, or after `seconds`. The listener is gone after."""
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([self._socket, stream.sock], [], [], left)
                if self._socket in readable:
                    connection, _ = self._socket.accept()
                    connection.setblocking(True)
                    return connection
                if readable:
                    return None
            return None
        except OSError:
            return None
        finally:
            self.close()

    def close(self) -> None:
        self._socket.close()
        with contextlib.suppress(OSError):
            os.unlink(self.folder / SOCKET_NAME)
        with contextlib.suppress(OSError):
            self.folder.rmdir()
