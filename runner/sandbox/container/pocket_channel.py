"""The container's end of the runner's channel (runner/sandbox/channel.py), for warm.py and prestart.py.

Stdlib only, any Python 3.8+.
"""

import socket
import sys

GREETING_SECONDS = 10.0  # the runner greets a connection it accepted at once; a silent one it gave up on


def connect(path, who):
    """The runner's channel, once it greeted this program: two connections (the first carries the calls), else
    None, after saying why on stderr (the runner, reading the attach stream, then stops waiting for a connection)."""
    if not path:
        return None
    connections = []
    try:
        for _ in range(2):
            connections.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            connections[-1].connect(path)
        connections[0].settimeout(GREETING_SECONDS)
        if connections[0].recv(1) != b"+":
            raise ConnectionError("the runner did not greet this program")
        connections[0].settimeout(None)
    except OSError as exc:
        for connection in connections:
            connection.close()
        sys.stderr.write(who + ": no channel (" + str(exc) + "), serving on stdin\n")
        sys.stderr.flush()
        return None
    return connections
