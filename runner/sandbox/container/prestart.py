"""pocket-runner's launcher for Python tools: launch.sh's protocol with the interpreter already started.

A pooled container of a tool whose `entrypoint.run` is `python FILE ARGS...` or `python -m MODULE ARGS...`
runs this instead of launch.sh, so a call skips the interpreter's start (stdlib only, any Python 3.8+).
The protocol is launch.sh's: a `pocket_nonce=` line, `export NAME='value'` lines (shell-quoted), the sentinel,
then the body, which stays unread on stdin for the tool. The tool then runs as `python` would run it
(`__main__`, sys.argv, sys.path[0], exit status, a traceback for an exception, atexit handlers), and its exit
status is reported on both streams marked with the nonce. After a success every other process is killed and
the container waits, holding nothing of the call, as launch.sh's does.
"""

import os
import runpy
import shlex
import signal
import sys
import traceback

SENTINEL = b"__pocket_body_follows__"
BUILD_HOME = "/home/pocket"


def read_line():
    """One line from fd 0, a byte at a time: what follows the sentinel must stay unread for the tool."""
    line = bytearray()
    while True:
        byte = os.read(0, 1)
        if not byte:
            return None
        if byte == b"\n":
            return bytes(line)
        line += byte


def read_call():
    """The call's nonce and environment, up to the sentinel; None when stdin closed before it."""
    nonce, environment = "", {}
    while True:
        line = read_line()
        if line is None:
            return None
        if line == SENTINEL:
            return nonce, environment
        text = line.decode("utf-8", "surrogateescape")
        if text.startswith("pocket_nonce="):
            nonce = text.partition("=")[2]
            continue
        words = shlex.split(text)  # export NAME='value': the runner quoted it for sh
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            environment[name] = value


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
        import threading

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
    call = read_call()
    if call is None:
        os.write(2, b"pocket launcher: stdin closed before the body\n")
        os._exit(125)
    nonce, environment = call
    os.environ.update(environment)
    if os.path.isdir(BUILD_HOME):  # what entrypoint.build put in its home (see launch.sh)
        os.environ["HOME"] = BUILD_HOME
    status = run(sys.argv[1:])
    marker = f"\x1e{nonce} {status}\n".encode()
    os.write(1, marker)
    os.write(2, marker)
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
