"""pocket-runner warm server: loads a tool's `module:function` handler once, then serves calls.

Runs inside the tool's container (stdlib only, any Python 3.8+). Protocol, one JSON document per line:
stdin  {"id": "...", "env": {NAME: value}, "body": {...}}
stdout {"id": "...", "ok": true, "value": ...} or {"id": "...", "ok": false, "error": "..."}, then "\x1e<id>\n"
       on stderr
Anything the handler prints goes to stderr, so a print cannot corrupt the protocol. The environment
is the container's own plus the request's `env` during a call, and the container's own between calls.
"""

import importlib
import json
import os
import sys
import traceback

BUILD_HOME = "/home/pocket"


def main() -> None:
    module_name, _, function_name = sys.argv[1].partition(":")
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # fd 1 (and so subprocesses' stdout) now goes to stderr
    sys.stdout = sys.stderr
    sys.path.insert(0, os.getcwd())
    if os.path.isdir(BUILD_HOME):  # what entrypoint.build put in its home (see launch.sh)
        os.environ["HOME"] = BUILD_HOME
    baseline = dict(os.environ)
    handler, load_error = None, None
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except BaseException:
        load_error = "cannot load the handler " + sys.argv[1] + ":\n" + traceback.format_exc(limit=-3)

    for line in sys.stdin:
        request = {}
        try:
            request = json.loads(line)
            os.environ.clear()
            os.environ.update(baseline)
            os.environ.update(request.get("env") or {})
            if handler is None:
                reply = {"ok": False, "error": load_error}
            else:
                reply = {"ok": True, "value": handler(request.get("body"))}
            text = json.dumps({"id": request.get("id"), **reply}, default=str)
        except BaseException:
            text = json.dumps({"id": request.get("id"), "ok": False, "error": traceback.format_exc(limit=-3)})
        os.environ.clear()  # the request's tokens do not stay in the environment between calls
        os.environ.update(baseline)
        sys.stderr.flush()
        protocol.write(text + "\n")
        protocol.flush()
        os.write(2, ("\x1e" + str(request.get("id", "")) + "\n").encode())  # after all the handler wrote


if __name__ == "__main__":
    main()
