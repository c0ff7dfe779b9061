"""The local pocket process: serves the `pocket invoke` calls of one user and one key (see `protocol`) over a
unix socket, keeping the runner loaded and each source's tools ready (their pools of started containers), and
exits after `[cli] daemon_idle_seconds` without a call, or as soon as its settings or code change.

    python -m runner.daemon.server NAME [--settings FILE] [--secrets FILE]   (started by the command)

Each call prints, through the command, exactly what the command would print running it itself. The log beside
the socket names events (start, calls by tool and outcome, refusals, exit), never a body, a variable or a result.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import select
import signal
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.daemon import protocol
from runner.daemon.protocol import Call, Key, Place
from runner.errors import ManifestError, PocketError, ToolFailedError

if TYPE_CHECKING:
    from runner.invocation import Cancellation
    from runner.manifest import Manifest
    from runner.pocket import Pocket
    from runner.settings import Settings

BEAT_SECONDS = 1.0  # how often a call's command hears that the call goes on
CHECK_SECONDS = 2.0  # how often the process looks whether it is idle, or its settings or code changed
REQUEST_SECONDS = 10.0  # for a command's call, and its go-ahead, once connected


class _Log:
    """Events, one line each, in a file only this user can read."""

    def __init__(self, path: Path):
        self._stream = open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", buffering=1)
        self._lock = threading.RLock()  # SIGTERM's handler logs too, on the main thread, maybe inside a write

    def __call__(self, event: str) -> None:
        with self._lock:
            self._stream.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}: {event}\n")


class _Connection:
    """One command's connection: frames out from any thread, the command's cancel (or its going away) in."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._lock = threading.Lock()
        self.gone = False

    def send(self, frame: dict[str, Any]) -> None:
        with self._lock:
            if self.gone:
                return
            try:
                protocol.send(self.sock, frame)
            except OSError:
                self.gone = True

    def out(self, text: str) -> None:
        self.send({"out": text})

    def say(self, message: str) -> None:
        self.send({"say": message})

    def err(self, text: str) -> None:
        self.send({"err": text})

    @contextlib.contextmanager
    def watched(self, cancellation: Cancellation) -> Iterator[None]:
        """Around a call: a beat every second to the command; its cancel frame, or its going away, cancels."""
        wake, woken = os.pipe()
        watcher = threading.Thread(target=self._watch, args=(cancellation, wake), name="pocket-daemon-watch")
        watcher.start()
        try:
            yield
        finally:
            os.write(woken, b"x")
            watcher.join()
            os.close(wake)
            os.close(woken)

    def _watch(self, cancellation: Cancellation, wake: int) -> None:
        while True:
            readable, _, _ = select.select([self.sock, wake], [], [], BEAT_SECONDS)
            if wake in readable:
                return
            if not readable:
                self.send({"beat": 1})
                continue
            try:
                frame = protocol.receive(self.sock)
            except (OSError, ValueError):
                frame = None
            cancellation.cancel()  # kills the call's container, now or as soon as it has one
            if frame is not None:
                self.send({"cancelled": True})
            return


class _Progress:
    """A Pocket's progress (builds, git fetches) goes to the command whose call caused it, on that call's thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self, message: str) -> None:
        output = getattr(self._local, "output", None)
        if output is not None:
            output.say(message)

    @contextlib.contextmanager
    def to(self, output: _Connection | None) -> Iterator[None]:
        previous = getattr(self._local, "output", None)
        self._local.output = output
        try:
            yield
        finally:
            self._local.output = previous


@dataclass
class _Entry:
    """A source's Pocket, the manifests it loaded, and the calls using it now."""

    pocket: Pocket
    manifests: list[Manifest]
    users: int = 0
    retired: bool = False  # replaced: closed when its last call ends


class _Pockets:
    """One Pocket per source, kept between calls (its pools stay started), replaced when the source's manifests
    change; a replaced one is closed when its last call ends. Edited tool code is rebuilt by the sandbox itself."""

    def __init__(self, settings: Settings, progress: _Progress):
        self._settings, self._progress = settings, progress
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._closed = False

    @contextlib.contextmanager
    def use(self, source: str, output: _Connection) -> Iterator[Pocket]:
        from runner.pocket import Pocket, load_tools

        with self._progress.to(output):
            manifests = load_tools([source], self._settings, progress=self._progress)
        with self._lock:
            if self._closed:
                raise ToolFailedError("the local pocket process was stopped before the call ran; run the command again")
            entry = self._entries.get(source)
            if entry is None or entry.manifests != manifests:
                if entry is not None:
                    self._retire(entry)
                with self._progress.to(None):  # said already, by the load above
                    entry = _Entry(Pocket([source], settings=self._settings, progress=self._progress), manifests)
                self._entries[source] = entry
            entry.users += 1
        try:
            yield entry.pocket
        finally:
            with self._lock:
                entry.users -= 1
                closing = entry.retired and entry.users == 0
            if closing:
                entry.pocket.close()

    def _retire(self, entry: _Entry) -> None:
        entry.retired = True
        if entry.users == 0:
            threading.Thread(target=entry.pocket.close, daemon=False).start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            entry.pocket.close()


class Server:
    """Accepts the connections of this user's commands, a thread per call, until idle or stale."""

    def __init__(self, where: Place, key: Key, files: tuple[str | None, str | None], settings: Settings, log: _Log):
        self._where, self._key, self._files, self._settings, self._log = where, key, files, settings, log
        from runner.cli import one_shot

        self._one_shot = one_shot(settings)  # for a call with limits to lower: as the command would run it
        self._progress = _Progress()
        self._pockets = _Pockets(settings, self._progress)
        self._lock = threading.Lock()
        self._calls = 0
        self._last = time.monotonic()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._now = False

    def serve(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._where.socket)  # left by a process that ended without removing it (we hold the lock)
        listener.bind(self._where.socket)
        os.chmod(self._where.socket, 0o600)
        listener.listen(64)
        identity = os.stat(self._where.socket).st_ino
        self._log(f"serving {self._where.socket}")
        try:
            self._accept_until_idle(listener)
        finally:
            # New commands find no socket (and start another process); those already queued are still served.
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self._where.socket).st_ino == identity:
                    os.unlink(self._where.socket)
            if self._now:  # the calls under way end now ("the sandbox was closed"), their containers removed
                self._pockets.close()
            listener.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:
                    self._accept(listener.accept()[0])
            listener.close()
            for thread in self._threads:
                thread.join()
            self._pockets.close()

    def stop(self, why: str, *, now: bool = False) -> None:
        """Stop accepting calls; `now`: also end the calls under way (SIGTERM), else let them finish."""
        self._log(f"exiting: {why}")
        self._now = now
        self._stop.set()

    def _accept_until_idle(self, listener: socket.socket) -> None:
        idle = self._settings.cli.daemon_idle_seconds
        checked = time.monotonic()
        while not self._stop.is_set():
            readable, _, _ = select.select([listener], [], [], CHECK_SECONDS)
            if readable:
                with contextlib.suppress(BlockingIOError, ConnectionAbortedError):  # the command gave up meanwhile
                    self._accept(listener.accept()[0])
            now = time.monotonic()
            with self._lock:
                quiet = self._calls == 0 and now - self._last >= idle
            if quiet:
                self.stop(f"no call for {idle:g} s")
            elif now - checked >= CHECK_SECONDS:
                checked = now
                current = protocol.key(*self._files)
                if current is None or current.material != self._key.material:
                    self.stop("its settings or the runner's code changed")

    def _accept(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        uid = protocol.peer_uid(sock)
        if uid != os.getuid():
            self._log(f"refused a connection from uid {uid}")
            self._refuse(sock, "this process serves another user")
            return
        if self._now:
            self._refuse(sock, "the local pocket process is stopping")
            return
        with self._lock:
            self._calls += 1
            self._threads = [t for t in self._threads if t.is_alive()]
        thread = threading.Thread(target=self._serve_call, args=(sock,), name="pocket-daemon-call")
        self._threads.append(thread)
        thread.start()

    @staticmethod
    def _refuse(sock: socket.socket, why: str) -> None:
        with contextlib.suppress(OSError):
            protocol.send(sock, {"refused": why})
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(0.5)
            sock.recv(65536)  # what it sent: closing with it unread would reset the connection before it reads
        sock.close()

    def _serve_call(self, sock: socket.socket) -> None:
        connection = _Connection(sock)
        try:
            sock.settimeout(REQUEST_SECONDS)  # a command sends its call at once
            request = protocol.receive(sock)
            sock.settimeout(None)
            if request is None or request.get("protocol") != protocol.PROTOCOL:
                connection.send({"refused": f"expected protocol {protocol.PROTOCOL} within {REQUEST_SECONDS:g} s"})
                return
            call = Call.of(request["call"])
            connection.send({"accepted": os.getpid()})
            sock.settimeout(REQUEST_SECONDS)
            go = protocol.receive(sock)  # a command that gave up waiting runs the call itself: then not here
            sock.settimeout(None)
            if go is None or not go.get("go"):
                self._log(f"dropped a call of {call.tool!r}: its command did not confirm it")
                return
            self._call(call, connection)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._log(f"a connection failed: {type(exc).__name__}")
        finally:
            sock.close()
            with self._lock:
                self._calls -= 1
                self._last = time.monotonic()

    def _call(self, call: Call, connection: _Connection) -> None:
        from runner.cli import call_tool, internal_error, show
        from runner.invocation import Cancellation

        started = time.perf_counter()
        cancellation = Cancellation()
        frame: dict[str, Any]
        try:
            with connection.watched(cancellation):
                with self._pocket(call, connection) as pocket, self._progress.to(connection):
                    answer = call_tool(pocket, call, cancellation)
                frame = {"exit": int(show(answer, call, connection))}
        except ManifestError as exc:
            frame = {"error": {"kind": "manifest", "problems": [vars(problem) for problem in exc.problems]}}
        except PocketError as exc:
            frame = {"error": {"kind": "pocket", "message": str(exc), "exit_code": int(exc.exit_code)}}
        except Exception as exc:  # a bug of ours: the command says so as it would running the call itself
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self._log(f"internal error {type(exc).__name__} at {where.filename}:{where.lineno}")  # never the message
            connection.say(internal_error(exc))
            frame = {"exit": 70}
        if cancellation.cancelled:
            self._log(f"cancelled a call of {call.tool!r}: its command asked, or went away")
            return
        outcome = frame.get("exit", frame.get("error", {}).get("kind"))
        self._log(f"call of {call.tool!r} for user {call.user!r}: {outcome} in {time.perf_counter() - started:.3f} s")
        connection.send(frame)  # after the log line: whoever reads the log once the command ended finds it

    @contextlib.contextmanager
    def _pocket(self, call: Call, connection: _Connection) -> Iterator[Pocket]:
        """The source's shared Pocket; a Pocket of its own for a call whose limits the settings lower, since the
        shared sandbox says so on its first call only and the command says it on every call."""
        from runner.pocket import Pocket

        with self._pockets.use(call.source, connection) as shared:
            if not _lowered(shared, call, self._settings):
                yield shared
                return
            with self._progress.to(None):  # the source's progress was said by the shared Pocket's load
                own = Pocket([call.source], settings=self._one_shot, progress=self._progress)
            with own:
                yield own


def _lowered(pocket: Pocket, call: Call, settings: Settings) -> bool:
    from runner.manifest import Manifest
    from runner.sandbox.limits import resolve_limits

    tool = pocket.tools.get(call.tool)
    if not isinstance(tool, Manifest):
        return False
    try:
        return bool(resolve_limits(settings.sandbox, tool, call.timeout).lowered)
    except PocketError:  # the call will say why it cannot run
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.daemon.server", description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--settings")
    parser.add_argument("--secrets")
    args = parser.parse_args(argv)
    key = protocol.key(args.settings, args.secrets)
    if key is None:
        return 0
    try:
        where = protocol.place(protocol.directory(), key)
    except protocol.Unusable:
        return 0
    if where.name != args.name:  # the settings changed since the command looked: it runs the call itself
        return 0
    lock = open(os.open(where.lock, os.O_WRONLY | os.O_CREAT, 0o600), "w")  # held until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another command started one first
        return 0
    lock.write(f"{os.getpid()}\n")  # who serves this socket: for `kill`, and for tests
    lock.flush()
    os.ftruncate(lock.fileno(), lock.tell())
    log = _Log(where.log)
    from runner.settings import load_settings

    try:
        settings = load_settings(args.settings, args.secrets)
    except PocketError:
        log("exiting: the settings do not load")
        return 2
    server = Server(where, key, (args.settings, args.secrets), settings, log)
    signal.signal(signal.SIGTERM, lambda *_: server.stop("SIGTERM", now=True))
    signal.signal(signal.SIGINT, lambda *_: server.stop("SIGINT"))
    try:
        server.serve()
    finally:
        os.unlink(where.lock)  # still held: a process started now takes a new lock file, and serves a new socket
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
