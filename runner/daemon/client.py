"""The command's side: hand one call to the local pocket process serving this command's key, relay what it
prints, and cancel the call when the command is interrupted. When no process serves the key, say how to start
one (the command starts it once its own settings load) and let the command run the call itself.

A process that is gone, refuses, or does not answer never hangs the command: before the process took the call,
the command runs it itself (with a notice); after, the command ends with an error saying the outcome is unknown
(running the call again could repeat what the tool did).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from runner.daemon import protocol
from runner.daemon.protocol import Call, Output, Place

CONNECT_SECONDS = 5.0  # to connect and have the call taken
SILENCE_SECONDS = 15.0  # a process serving a call sends a beat every second: this long without one is a hang
CANCEL_SECONDS = 15.0  # after Ctrl-C or SIGTERM: for the process to kill the call's container


class Fallback(NamedTuple):
    """The command runs the call itself; `start`, when set, starts a process for the next command."""

    start: Callable[[], None] | None


def invoke(call: Call, settings_file: str | None, secrets_file: str | None, output: Output) -> int | Fallback:
    """The exit code of `call` served by the local process, or a Fallback when the command must run it."""
    key = protocol.key(settings_file, secrets_file)
    if key is None or key.enabled is not True:  # a file the settings will refuse, or an opt-out
        return Fallback(None)
    try:
        where = protocol.place(protocol.directory(), key)
    except protocol.Unusable as exc:
        output.say(f"running the call in this process: {exc}")
        return Fallback(None)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        return _hand_over(sock, where, call, settings_file, secrets_file, output)
    finally:
        sock.close()


def _hand_over(
    sock: socket.socket, where: Place, call: Call, settings_file: str | None, secrets_file: str | None, output: Output
) -> int | Fallback:
    sock.settimeout(CONNECT_SECONDS)
    try:
        sock.connect(where.socket)
    except (FileNotFoundError, ConnectionRefusedError):  # none yet, or one that ended without removing its socket
        return Fallback(lambda: start(where, settings_file, secrets_file))
    except OSError as exc:
        output.say(f"running the call in this process: cannot reach the local pocket process ({exc.strerror})")
        return Fallback(None)
    if protocol.peer_uid(sock) != os.getuid():
        output.say(f"running the call in this process: {where.socket} is served by another user")
        return Fallback(None)
    try:
        protocol.send(sock, {"protocol": protocol.PROTOCOL, "call": call._asdict()})
        taken = protocol.receive(sock)
    except (OSError, ValueError):  # ValueError: a frame that is not JSON
        taken = None
    if taken is None or "accepted" not in taken:
        why = taken.get("refused") if taken else "it did not take the call"
        output.say(f"running the call in this process: the local pocket process failed ({why})")
        return Fallback(None)
    try:
        protocol.send(sock, {"go": True})  # from here on the call runs there, and only there
    except OSError as exc:
        output.say(f"running the call in this process: the local pocket process failed ({exc.strerror})")
        return Fallback(None)
    return _relay(sock, int(taken["accepted"]), output)


def _relay(sock: socket.socket, pid: int, output: Output) -> int:
    """Print what the process sends until the call's end; on Ctrl-C or SIGTERM, cancel the call first."""
    sock.settimeout(SILENCE_SECONDS)
    try:
        while True:
            try:
                frame = protocol.receive(sock)
            except (OSError, ValueError):  # TimeoutError is an OSError: no beat for too long
                frame = None
            if frame is None:
                from runner.errors import ToolFailedError

                raise ToolFailedError(
                    f"the local pocket process (pid {pid}) stopped answering during the call, so its outcome is "
                    "unknown; run the command again (--no-daemon runs the call in this process)"
                )
            if "exit" in frame:
                return int(frame["exit"])
            if "error" in frame:
                raise _error(frame["error"])
            for stream in ("out", "say", "err"):
                if stream in frame:
                    getattr(output, stream)(frame[stream])
    except (KeyboardInterrupt, SystemExit):
        _cancel(sock)
        raise


def _cancel(sock: socket.socket) -> None:
    """Ask the process to stop the call and wait (a while) until it has killed the call's container."""
    sock.settimeout(CANCEL_SECONDS)
    try:
        protocol.send(sock, {"cancel": True})
        while (frame := protocol.receive(sock)) is not None and "cancelled" not in frame:
            pass  # what the call still printed: the command was interrupted, as in-process it prints no more
    except (OSError, ValueError):
        pass  # gone or silent: the command must end anyway


def _error(error: dict[str, Any]) -> Exception:
    """The exception the command would have raised itself, so it reports it the same way."""
    from runner.errors import ExitCode, ManifestError, PocketError, Problem

    if error["kind"] == "manifest":
        return ManifestError([Problem(**problem) for problem in error["problems"]])
    exc = PocketError(error["message"])
    exc.exit_code = ExitCode(error["exit_code"])
    return exc


def start(where: Place, settings_file: str | None, secrets_file: str | None) -> None:
    """Start the process serving `where`, detached: it outlives this command and never holds its terminal."""
    import subprocess

    files = [a for flag, v in (("--settings", settings_file), ("--secrets", secrets_file)) if v for a in (flag, v)]
    subprocess.Popen(
        # -P: the working folder is not on sys.path (a folder of the user's named `runner` must not be imported)
        [sys.executable, "-P", "-m", "runner.daemon.server", where.name, *files],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the terminal goes to the command's process group, not to it
        close_fds=True,
    )
