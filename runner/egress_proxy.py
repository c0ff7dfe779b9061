"""pocket-runner egress proxy: the only way out for a tool whose manifest names the hosts it needs.

Runs in its own hardened container (stdlib only, any Python 3.8+), attached to the default bridge and
to an internal network that has no route out; the tool's container sits on the internal network only
and gets HTTP_PROXY/HTTPS_PROXY pointing here. Usage: `python3 egress_proxy.py PORT CLIENT_CIDR HOST[:PORT]...`:
only clients from CLIENT_CIDR (the internal network) are served, so the bridge side is no open proxy.
A host without a port allows 80 and 443. Anything else gets `403`. HTTPS goes through CONNECT (the
proxy never sees inside the TLS session); plain HTTP requests are forwarded as they are.
"""

import ipaddress
import socket
import sys
import threading

MAX_HEAD = 16384


def parse_allowed(items):
    allowed = set()
    for item in items:
        host, _, port = item.lower().partition(":")
        for p in [int(port)] if port else [80, 443]:
            allowed.add((host.rstrip("."), p))
    return allowed


def pipe(source, target):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((target, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def refuse(client, status, reason):
    body = (reason + "\n").encode()
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    try:
        client.sendall(head.encode() + body)
    except OSError:
        pass
    client.close()


def target_of(method, uri):
    if method == "CONNECT":
        host, _, port = uri.rpartition(":")
        return host.strip("[]"), int(port)
    if not uri.lower().startswith("http://"):
        raise ValueError("only absolute http:// URIs or CONNECT")
    authority = uri[7:].split("/", 1)[0]
    host, _, port = authority.partition(":")
    return host, int(port or 80)


def handle(client, allowed):
    client.settimeout(30)
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
            if len(head) > MAX_HEAD:
                refuse(client, "431 Request Header Fields Too Large", "request head too large")
                return
        method, uri, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        host, port = target_of(method.upper(), uri)
    except (ValueError, OSError):
        refuse(client, "400 Bad Request", "pocket egress proxy: bad request")
        return
    if (host.lower().rstrip("."), port) not in allowed:
        refuse(client, "403 Forbidden", f"pocket egress proxy: {host}:{port} is not in the tool's allow-list")
        return
    try:
        upstream = socket.create_connection((host, port), timeout=15)
    except OSError as exc:
        refuse(client, "502 Bad Gateway", f"pocket egress proxy: cannot reach {host}:{port}: {exc}")
        return
    client.settimeout(None)
    upstream.settimeout(None)
    if method.upper() == "CONNECT":
        rest = head.split(b"\r\n\r\n", 1)[1]
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            upstream.sendall(rest)
    else:
        upstream.sendall(head)
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
    pipe(client, upstream)


def main():
    port, clients, allowed = int(sys.argv[1]), ipaddress.ip_network(sys.argv[2]), parse_allowed(sys.argv[3:])
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))  # noqa: S104 - inside its own container, reachable from the internal network
    server.listen(64)
    print("ready", flush=True)
    while True:
        client, address = server.accept()
        if ipaddress.ip_address(address[0]) not in clients:
            client.close()
            continue
        threading.Thread(target=handle, args=(client, allowed), daemon=True).start()


if __name__ == "__main__":
    main()
