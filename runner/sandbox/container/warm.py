"""pocket-runner warm server: loads a tool's `module:function` handler once, then serves calls.

Runs inside the tool's container (stdlib only, any Python 3.8+). A request is one JSON line,
{"id": "...", "env": {NAME: value}, "body": {...}}, answered with one JSON line,
{"id": "...", "ok": true, "value": ...} or {"id": "...", "ok": false, "error": "..."}.

On the channel, when $POCKET_CHANNEL names a socket the runner listens on: two connections to it, requests and
replies on the first, the handler's fds 1 and 2 on the second (the runner greets the first once it accepted
both). Otherwise, or when the channel cannot be reached (this server says so on stderr first): requests on
stdin, replies on stdout, and the handler's fd 1 goes to stderr; before each reply this server writes "\x1e<id>\n"
on stderr after all the handler wrote there: the runner then has it all. (On the channel the output is in the
runner's queue when the handler's write returns, so it is read before the reply without a marker.)

The environment is the container's own plus the request's `env` during a call, and the container's own between
calls.
"""

import importlib
import json
import os
import sys
import traceback

from pocket_channel import connect  # /pocket, this file's folder

BUILD_HOME = "/home/pocket"
CHANNEL = "POCKET_CHANNEL"
_ENCODER = json.JSONEncoder(default=str)  # one: json.dumps with an option makes a new one per call


def load(spec):
    """The handler, or the error saying why it cannot be loaded."""
    module_name, _, function_name = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        return getattr(importlib.import_module(module_name), function_name), None
    except BaseException:
        return None, "cannot load the handler " + spec + ":\n" + traceback.format_exc(limit=-3)


def encoded(environ):
    """os.environ's own dict of encoded names and values (CPython's), to compare in C; None where there is none."""
    data = getattr(environ, "_data", None)
    return dict(data) if isinstance(data, dict) else None


def restore(baseline, baseline_encoded):
    """The container's own environment again, changing only what differs (clearing and refilling it all took
    0.1-0.5 ms a call). Unchanged, as after a call with no variables, it is one comparison in C: walking
    os.environ decodes every name and value, ~75 us a call."""
    environ = os.environ
    if baseline_encoded is not None and getattr(environ, "_data", None) == baseline_encoded:
        return
    try:
        for name in [name for name in environ if name not in baseline]:
            del environ[name]
        for name, value in baseline.items():
            if environ.get(name) != value:
                environ[name] = value
    except (RuntimeError, KeyError):  # a thread of the handler changed it meanwhile: all of it, then
        environ.clear()
        environ.update(baseline)


def parse(line):
    """A request line as a dict, or None."""
    try:
        request = json.loads(line)
    except ValueError:
        return None
    return request if isinstance(request, dict) else None


def answer(request, handler, load_error, baseline, baseline_encoded):
    """One request's reply line. The request's environment is there only during the call."""
    if request is None:
        return json.dumps({"id": None, "ok": False, "error": "the request is not a JSON object"})
    try:
        os.environ.update(request.get("env") or {})
        if handler is None:
            reply = {"ok": False, "error": load_error}
        else:
            reply = {"ok": True, "value": handler(request.get("body"))}
        text = _ENCODER.encode({"id": request.get("id"), **reply})
    except BaseException:
        text = json.dumps({"id": request.get("id"), "ok": False, "error": traceback.format_exc(limit=-3)})
    restore(baseline, baseline_encoded)  # the request's tokens do not stay in the environment between calls
    return text


def main():
    channel = connect(os.environ.pop(CHANNEL, ""), "pocket-runner warm server")
    if channel is not None:
        replies, output = channel
        requests = replies.makefile("rb")
        protocol = replies.makefile("w", encoding="utf-8")
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
    else:
        requests = sys.stdin
        protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)  # fd 1 (and so subprocesses' stdout) now goes to stderr
    sys.stdout = sys.stderr
    if os.path.isdir(BUILD_HOME):  # what entrypoint.build put in its home (see launch.sh)
        os.environ["HOME"] = BUILD_HOME
    baseline, baseline_encoded = dict(os.environ), encoded(os.environ)
    handler, load_error = load(sys.argv[1])

    for line in requests:
        request = parse(line)
        text = answer(request, handler, load_error, baseline, baseline_encoded)
        sys.stderr.flush()
        if channel is None:  # on the attach stream, stdout and stderr are not ordered between them
            request_id = request.get("id") if request is not None else None
            os.write(2, ("\x1e" + str(request_id or "") + "\n").encode())  # after all the handler wrote
        protocol.write(text + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
