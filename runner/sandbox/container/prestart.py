"""pocket-runner's launcher for Python tools: launch.sh's protocol with the interpreter already started.

A pooled container of a tool whose `entrypoint.run` is `python FILE ARGS...` or `python -m MODULE ARGS...`
runs this instead of launch.sh, so a call skips the interpreter's start (stdlib only, any Python 3.8+).
The protocol is launch.sh's: a `pocket_nonce=` line, `export NAME='value'` lines (shell-quoted), the sentinel
with the body's length, then the body, which the tool reads on its stdin (a pipe), then EOF. The tool then
runs as `python` would run it (`__main__`, sys.argv, sys.path[0], exit status, a traceback for an exception,
atexit handlers), and its exit status is reported on both streams marked with the nonce. After a success every
other process is killed and the container waits, holding nothing of the call, as launch.sh's does.

When $POCKET_CHANNEL names the runner's channel (a local engine under runc), the call comes on its first
connection, which is also the tool's stdout, and stderr goes to its second: dockerd copies nothing of the call.
Otherwise they are the container's stdin, stdout and stderr (the engine's attach stream).
"""

import json  # noqa: F401 - imported ahead: nearly every tool reads its body with it, now at no cost per call
import os
import pkgutil  # noqa: F401 - imported ahead: runpy.run_path imports it (and typing with it: ~5 ms) on its first call
import runpy
import shlex
import signal
import sys
import threading
import time
import traceback

from pocket_channel import connect  # /pocket, this file's folder

# A process's first compile() costs ~1.5 ms more than later ones; run_path compiles the tool's file at the call.
compile("pass", "<pocket warm-up>", "exec")

SENTINEL = b"__pocket_body_follows__ "  # then the body's length in bytes
BUILD_HOME = "/home/pocket"
CHANNEL = "POCKET_CHANNEL"
PIPE_BUF = 4096  # a write of at most this much to an empty pipe never blocks
TEARDOWN_PAUSE = 0.03  # seconds between the closing markers and the end of the call's process


def read_call():
    """The call's nonce, environment and body; None when stdin closed before the whole body came (or the
    length is not a number).

    The body is framed by its length (see launch.sh): nothing waits for the end of stdin, which not every
    transport can signal. Nothing follows the body, so stdin is read in chunks."""
    nonce, environment, pending = "", {}, b""
    while True:
        line, newline, rest = pending.partition(b"\n")
        if not newline:
            chunk = os.read(0, 65536)
            if not chunk:
                return None
            pending += chunk
            continue
        pending = rest
        if line.startswith(SENTINEL):
            size = line[len(SENTINEL) :]
            if not size.isdigit():
                return None
            size = int(size)
            while len(pending) < size:
                chunk = os.read(0, max(size - len(pending), 65536))
                if not chunk:
                    return None
                pending += chunk
            return nonce, environment, pending[:size]
        text = line.decode("utf-8", "surrogateescape")
        if text.startswith("pocket_nonce="):
            nonce = text.partition("=")[2]
            continue
        words = shlex.split(text)  # export NAME='value': the runner quoted it for sh
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            environment[name] = value


def give_stdin(body):
    """Make `body`, then EOF, the tool's stdin (fd 0, so its subprocesses' too): a pipe, as launch.sh gives.
    A body larger than a pipe holds is fed by a thread, which ends when the tool closes its stdin."""
    read_end, write_end = os.pipe()
    os.dup2(read_end, 0)
    os.close(read_end)
    if len(body) <= PIPE_BUF:
        feed(write_end, body)
    else:
        threading.Thread(target=feed, args=(write_end, body), daemon=True).start()


def feed(fd, data):
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass  # the tool closed its stdin without reading all of it
    finally:
        os.close(fd)


def run(argv):
    """Run the tool as `python argv...` would; its exit status."""
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path[0] = os.getcwd()  # was /pocket, this file's folder: the tool must not import from it
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
        status = 0
    except SystemExit as exc:
        status = exit_status(exc.code)
    except BaseException:
        traceback.print_exc()
        status = 1
    try:
        import atexit

        threading._shutdown()  # non-daemon threads end first, as at an interpreter's exit
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            status = status or 120  # as Python does when stdout cannot be flushed at exit
    return status


def exit_status(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def main():
    channel = connect(os.environ.pop(CHANNEL, ""), "pocket launcher")
    if channel is not None:  # the call comes, and stdout and stderr go, on the channel's two connections
        calls, output = channel
        os.dup2(calls.fileno(), 0)
        os.dup2(calls.fileno(), 1)
        os.dup2(output.fileno(), 2)
    call = read_call()
    if call is None:
        os.write(2, b"pocket launcher: stdin ended before a whole call (environment, length, body)\n")
        os._exit(125)
    nonce, environment, body = call
    give_stdin(body)
    os.environ.update(environment)
    if os.path.isdir(BUILD_HOME):  # what entrypoint.build put in its home (see launch.sh)
        os.environ["HOME"] = BUILD_HOME
    status = run(sys.argv[1:])
    marker = f"\x1e{nonce} {status}\n".encode()
    os.write(1, marker)
    os.write(2, marker)
    # What follows (killing the rest, then exec or exit: this process's memory freed) held up the runner's read of
    # the markers by 3-4 ms in one call of ten, measured on 2 cores; the runner reads them well within this pause.
    time.sleep(TEARDOWN_PAUSE)
    if status == 0:
        try:
            os.kill(-1, signal.SIGKILL)  # spares pid 1, this process
        except OSError:
            pass
        try:
            os.execvpe("sleep", ["sleep", "600"], {})  # noqa: S606 - the wait, with an empty environment
        except OSError:
            pass
    os._exit(status)


if __name__ == "__main__":
    main()
