"""pocket-runner warm server: loads a tool's `module:function` handler once, then serves calls.

Runs inside the tool's container (stdlib only, any Python 3.8+). A request is one JSON line,
{"id": "...", "env": {NAME: value}, "body": {...}}, answered with one JSON line,
{"id": "...", "ok": true, "value": ...} or {"id": "...", "ok": false, "error": "..."}. Two ways to speak it:

- the channel, when $POCKET_CHANNEL names a socket the runner listens on: requests and replies on it, each reply
  followed by a line holding what the handler wrote to stdout and stderr during the call (a JSON string). Both go
  into a pipe this server reads, so nothing the handler prints reaches the channel.
- stdin and stdout otherwise (or when the channel cannot be reached: this server says so on stderr first): the
  reply on stdout, then "\x1e<id>\n" on stderr after all the handler wrote there; its stdout goes to stderr too.

The environment is the container's own plus the request's `env` during a call, and the container's own between
calls.
"""

import importlib
import json
import os
import select
import socket
import sys
import threading
import traceback

BUILD_HOME = "/home/pocket"
CHANNEL = "POCKET_CHANNEL"
KEEP = 64 * 1024  # the tail of a call's output kept (the runner keeps as much)
_ENCODER = json.JSONEncoder(default=str)  # one: json.dumps with an option makes a new one per call


class Captured:
    """fds 1 and 2 into a pipe, drained by a thread that keeps the last KEEP bytes (a pipe nobody reads would block
    a handler that prints more than it holds). A read and what it read are kept under one lock, so `take` can
    read what is left itself and know it has it all: no handoff between threads per call."""

    def __init__(self):
        read, write = os.pipe()
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        os.set_blocking(read, False)  # only this end: the handler's writes still wait when the pipe is full
        self._fd = read
        self._lock = threading.Lock()
        self._data = bytearray()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while True:
            poller.poll()
            with self._lock:
                if not self._read():
                    return

    def _read(self):
        """Read what the pipe holds; False once every writer is gone."""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            self._data += chunk
            if len(self._data) > 2 * KEEP:
                del self._data[:-KEEP]

    def clear(self):
        with self._lock:
            self._data.clear()

    def take(self):
        """What was written since `clear`."""
        for stream in {sys.stdout, sys.stderr}:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        with self._lock:
            self._read()
            text = bytes(self._data[-KEEP:]).decode("utf-8", "replace")
            self._data.clear()
        return text


def connect(path):
    """The runner's channel, or None (then this server speaks on stdin and stdout)."""
    if not path:
        return None
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        channel.connect(path)
    except OSError as exc:
        channel.close()
        sys.stderr.write("pocket-runner warm server: no channel (" + str(exc) + "), serving on stdin\n")
        sys.stderr.flush()
        return None
    return channel


def load(spec):
    """The handler, or the error saying why it cannot be loaded."""
    module_name, _, function_name = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        return getattr(importlib.import_module(module_name), function_name), None
    except BaseException:
        return None, "cannot load the handler " + spec + ":\n" + traceback.format_exc(limit=-3)


def restore(baseline):
    """The container's own environment again, changing only what differs (clearing and refilling it all took
    0.1-0.5 ms a call)."""
    environ = os.environ
    for name in [name for name in environ if name not in baseline]:
        del environ[name]
    for name, value in baseline.items():
        if environ.get(name) != value:
            environ[name] = value


def answer(line, handler, load_error, baseline):
    """One request's reply line, and its id. The request's environment is there only during the call."""
    request = {}
    try:
        request = json.loads(line)
        os.environ.update(request.get("env") or {})
        if handler is None:
            reply = {"ok": False, "error": load_error}
        else:
            reply = {"ok": True, "value": handler(request.get("body"))}
        text = _ENCODER.encode({"id": request.get("id"), **reply})
    except BaseException:
        text = json.dumps({"id": request.get("id"), "ok": False, "error": traceback.format_exc(limit=-3)})
    restore(baseline)  # the request's tokens do not stay in the environment between calls
    return text, str(request.get("id", ""))


def main():
    channel = connect(os.environ.pop(CHANNEL, ""))
    if channel is not None:
        captured = Captured()
        requests = channel.makefile("rb")
    else:
        protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)  # fd 1 (and so subprocesses' stdout) now goes to stderr
        requests = sys.stdin
    sys.stdout = sys.stderr
    if os.path.isdir(BUILD_HOME):  # what entrypoint.build put in its home (see launch.sh)
        os.environ["HOME"] = BUILD_HOME
    baseline = dict(os.environ)
    handler, load_error = load(sys.argv[1])

    for line in requests:
        if channel is not None:
            captured.clear()  # what was written between calls belongs to none
        text, request_id = answer(line, handler, load_error, baseline)
        if channel is not None:
            output = captured.take()
            channel.sendall((text + "\n" + (json.dumps(output) if output else '""') + "\n").encode())
            continue
        sys.stderr.flush()
        protocol.write(text + "\n")
        protocol.flush()
        os.write(2, ("\x1e" + request_id + "\n").encode())  # after all the handler wrote


if __name__ == "__main__":
    main()
