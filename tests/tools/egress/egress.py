"""Asks the egress proxy for a tunnel to an allowed host and to another one; tries DNS itself. Sends no data."""

import json
import os
import socket
from urllib.parse import urlsplit

proxy = urlsplit(os.environ["HTTPS_PROXY"])


def tunnel(host: str, port: int) -> str:
    with socket.create_connection((proxy.hostname, proxy.port), timeout=10) as sock:
        sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        return sock.recv(200).split(b"\r\n")[0].decode()


try:
    socket.getaddrinfo("example.com", 443)
    dns = "resolved"
except OSError as exc:
    dns = type(exc).__name__
print(json.dumps({"allowed": tunnel("pypi.org", 443), "denied": tunnel("example.com", 443), "dns": dns}))
