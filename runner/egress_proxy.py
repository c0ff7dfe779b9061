"""pocket-runner egress proxy: the only way out for a tool whose manifest names the hosts it needs.

Runs in its own hardened container (stdlib only, any Python 3.8+), attached to the default bridge and
to an internal network that has no route out; the tool's container sits on the internal network only
and gets HTTP_PROXY/HTTPS_PROXY pointing here. Usage: `python3 egress_proxy.py PORT CLIENT_CIDR HOST[:PORT]...`:
only clients from CLIENT_CIDR (the internal network) are served, so the bridge side is no open proxy.
A host without a port allows 80 and 443. Anything else gets `403`, and so does an allowed name that
resolves only to a loopback, private, link-local or multicast address (DNS rebinding must not open the
host or the LAN); the proxy connects to the address it checked. HTTPS goes through CONNECT (the proxy never sees
inside the TLS session); plain HTTP requests are forwarded as they are. At most MAX_CLIENTS connections
at once (two threads each); more get `503`, so no tool can exhaust the proxy's threads for the others.
"""

import ipaddress
import socket
import sys
import threading

MAX_HEAD = 16384
MAX_CLIENTS = 100  # the proxy's container allows 256 processes/threads


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


# The machine itself, its LAN and the Docker networks on it: never reached through an allowed name.
LOCAL = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "224.0.0.0/3", "::/128", "::1/128", "::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8",
)]  # fmt: skip


def public_address(host, port):
    """The first address of `host` outside LOCAL, or None."""
    for *_, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = ipaddress.ip_address(address[0].split("%")[0])
        if not any(ip in network for network in LOCAL):
            return address[0]
    return None


def handle(client, allowed, slots):
    try:
        serve(client, allowed)
    finally:
        slots.release()


def serve(client, allowed):
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
        address = public_address(host, port)
        if address is None:
            refuse(client, "403 Forbidden", f"pocket egress proxy: {host} resolves only to local addresses")
            return
        upstream = socket.create_connection((address, port), timeout=15)
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
    try:
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
    except RuntimeError:  # no thread left to start
        upstream.close()
        client.close()
        return
    pipe(client, upstream)


def main():
    port, clients, allowed = int(sys.argv[1]), ipaddress.ip_network(sys.argv[2]), parse_allowed(sys.argv[3:])
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))  # noqa: S104 - inside its own container, reachable from the internal network
    server.listen(64)
    print("ready", flush=True)
    slots = threading.BoundedSemaphore(MAX_CLIENTS)
    while True:
        try:
            client, address = server.accept()
        except OSError:
            continue  # out of file descriptors, a connection reset before accept: keep serving the others
        if ipaddress.ip_address(address[0]) not in clients:
            client.close()
            continue
        if not slots.acquire(blocking=False):
            refuse(client, "503 Service Unavailable", f"pocket egress proxy: over {MAX_CLIENTS} connections at once")
            continue
        try:
            threading.Thread(target=handle, args=(client, allowed, slots), daemon=True).start()
        except RuntimeError:  # no thread left to start
            slots.release()
            refuse(client, "503 Service Unavailable", "pocket egress proxy: busy")


if __name__ == "__main__":
    main()
