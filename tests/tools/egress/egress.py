"""Asks the egress proxy for a tunnel to an allowed host and to another one; tries DNS itself, the host
machine directly (the network's gateway and docker0), and holding more connections than the proxy serves.
Sends no data beyond the CONNECT lines."""

import json
import os
import socket
import time
from urllib.parse import urlsplit

proxy = urlsplit(os.environ["HTTPS_PROXY"])


def tunnel(host: str, port: int) -> str:
    """The proxy's status line and reason; the exception's name when there is no answer (the test shows it)."""
    try:
        with socket.create_connection((proxy.hostname, proxy.port), timeout=20) as sock:
            sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            answer = sock.recv(400).decode().split("\r\n")
            return answer[0] + (" " + answer[-1].strip() if len(answer) > 2 else "")  # the status and the reason
    except OSError as exc:
        return type(exc).__name__


def recovered(host: str, port: int) -> str:
    """A tunnel once the proxy has let go of the flood's connections (it notices each close in its own time)."""
    deadline = time.monotonic() + 15
    while True:
        answer = tunnel(host, port)
        if not answer.startswith("HTTP/1.1 503") or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def direct(ip: str) -> str:
    """'reachable' when the host answers at all (even 'connection refused' means a route to it)."""
    try:
        socket.create_connection((ip, 9), timeout=2).close()
        return "reachable"
    except ConnectionRefusedError:
        return "reachable"
    except OSError as exc:
        return type(exc).__name__


def gateway() -> str:
    with open("/proc/net/route") as routes:
        for line in routes.readlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
    # no default route: the first address of our own /16-or-smaller network, where a gateway would be
    return proxy.hostname.rsplit(".", 1)[0] + ".1"


try:
    socket.getaddrinfo("example.com", 443)
    dns = "resolved"
except OSError as exc:
    dns = type(exc).__name__

# The tunnels first, while the proxy serves nobody else; the flood after them.
allowed, denied, private = tunnel("pypi.org", 443), tunnel("example.com", 443), tunnel("localhost", 443)

held = []  # more idle connections than the proxy serves at once: it refuses the extra, keeps serving
try:
    for _ in range(110):
        held.append(socket.create_connection((proxy.hostname, proxy.port), timeout=20))
    flood = held[-1].recv(200).split(b"\r\n")[0].decode()
except OSError as exc:
    flood = f"{type(exc).__name__} after {len(held)} connections"
for sock in held:
    sock.close()

print(
    json.dumps(
        {
            "allowed": allowed,
            "denied": denied,
            "private": private,
            "dns": dns,
            "gateway": direct(gateway()),
            "docker0": direct("172.17.0.1"),
            "flood": flood,
            "after_flood": recovered("pypi.org", 443),
        }
    )
)
