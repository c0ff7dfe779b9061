"""Forks until the kernel refuses, then reports how far it got (the children sleep until killed)."""

import json
import os
import time

forked = 0
error = None
for _ in range(100000):
    try:
        pid = os.fork()
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
        break
    if pid == 0:
        time.sleep(3600)
        os._exit(0)
    forked += 1
print(json.dumps({"forked": forked, "error": error}))
