"""Reports the interfaces it has and whether a public name resolves. Sends nothing anywhere."""

import json
import os
import socket

try:
    socket.getaddrinfo("pypi.org", 443)
    resolved = True
except OSError as exc:
    resolved = f"{type(exc).__name__}: {exc}"
print(json.dumps({"interfaces": sorted(os.listdir("/sys/class/net")), "resolved": resolved}))
