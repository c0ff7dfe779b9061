"""Through the egress proxy: a plain HTTP GET of `path` on the allowed host (when `fetch`), then a CONNECT to
a host outside the allow-list. Returns how many bytes it sent and received for the GET, and the refusal's status
(printed when run as a program; `handle` serves warm mode)."""

import json
import os
import socket
import sys
from urllib.parse import urlsplit


def exchange(request: bytes) -> bytes:
    proxy = urlsplit(os.environ["HTTP_PROXY"])
    with socket.create_connection((proxy.hostname, proxy.port), timeout=20) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def handle(body: dict) -> dict:
    result = {}
    if body.get("fetch"):
        target = "api.upstream.test:8080"
        request = f"GET http://{target}{body['path']} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
        answer = exchange(request.encode())
        result.update(sent=len(request), received=len(answer), status=answer.split(b"\r\n", 1)[0].decode())
    refused = exchange(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    result["refused"] = refused.split(b"\r\n", 1)[0].decode()
    return result


if __name__ == "__main__":
    print(json.dumps(handle(json.load(sys.stdin))))
