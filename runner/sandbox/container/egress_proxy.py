"""pocket-runner egress proxy: the only way out for a tool whose manifest names the hosts it needs.

Runs in its own hardened container (stdlib only, any Python 3.8+), attached to the default bridge and
to an internal network that has no route out; the tool's container sits on the internal network only
and gets HTTP_PROXY/HTTPS_PROXY pointing here. Usage: `python3 egress_proxy.py PORT CLIENT_CIDR HOST[:PORT]...`:
only clients from CLIENT_CIDR (the internal network) are served, so the bridge side is no open proxy.
A host without a port allows 80 and 443; `*.example.com` allows every name below example.com (not
example.com itself). Anything else gets `403`, and so does an allowed name that resolves only to
addresses that are not global (loopback, private, shared, documentation, benchmark, link-local,
multicast, and IPv6 forms embedding such an IPv4 address: DNS rebinding must not open the host or the
LAN); the proxy connects to the address it checked.

HTTPS goes through CONNECT: the proxy never sees inside the TLS session, but it reads the ClientHello
and refuses one whose server name (SNI) is not the CONNECT host, so an allowed CDN-hosted name cannot
front for another. Plain HTTP is forwarded request by request: every request on a connection, pipelined
ones too, must name the connection's host in its target and its `Host` header. At most MAX_CLIENTS
connections at once (two threads each); more get `503`, so no tool can exhaust the proxy's threads.

Receipts: the proxy counts, per client address (one call's container), the connections it made to each
host with the bytes each way, and what it refused. The runner asks on the proxy's stdin (`receipt ADDRESS`)
and reads one JSON line on its stdout; asking hands the counts over and starts them again from zero. Bytes
are counted before they are forwarded, so whatever a tool has received is on its receipt.
"""

import ipaddress
import json
import socket
import sys
import threading

MAX_HEAD = 16384
MAX_CLIENTS = 100  # two threads each at most: the proxy's container allows 1024 (gVisor's own threads count too)
MAX_REFUSALS = 100  # distinct refusals kept per client until the runner takes them
MAX_NAME = 253
TLS_HANDSHAKE = 22
# NAT64 (RFC 6052): a gateway would forward these to the IPv4 address in their last 32 bits.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(Exception):
    """A request the proxy answers with `status` and closes."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Ledger:
    """Per client address: {(host, port): [connections, bytes sent, bytes received]} and the refusals, until
    `take`. Counting looks the entry up each time, so a connection kept open across two calls of a warm
    container counts its bytes to the call they flowed in."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reached = {}
        self.refused = {}

    def add(self, client, host, port, connections=0, sent=0, received=0):
        key = (host.lower().rstrip("."), port)
        with self.lock:
            entry = self.reached.setdefault(client, {}).setdefault(key, [0, 0, 0])
            entry[0] += connections
            entry[1] += sent
            entry[2] += received

    def refuse(self, client, host, port, reason):
        with self.lock:
            seen = self.refused.setdefault(client, {})
            if len(seen) < MAX_REFUSALS:  # a name is at most 253 characters: what a tool sends is cut there
                seen.setdefault((host.lower().rstrip(".")[:MAX_NAME], port, reason[: 2 * MAX_NAME]), None)

    def take(self, client):
        with self.lock:
            reached, refused = self.reached.pop(client, {}), self.refused.pop(client, {})
        return {
            "receipt": client,
            "reached": [
                {"host": host, "port": port, "connections": c, "bytes_sent": sent, "bytes_received": received}
                for (host, port), (c, sent, received) in sorted(reached.items())
            ],
            "refused": [{"host": host, "port": port, "reason": reason} for host, port, reason in refused],
        }


def answer_receipts(ledger, lines, write):
    """`receipt ADDRESS` lines from the runner, each answered with that client's counts as one JSON line."""
    for line in lines:
        command, _, client = line.strip().partition(" ")
        if command == "receipt" and client:
            write(json.dumps(ledger.take(client)) + "\n")


def parse_allowed(items):
    allowed = set()
    for item in items:
        host, _, port = item.lower().partition(":")
        for p in [int(port)] if port else [80, 443]:
            allowed.add((host.rstrip("."), p))
    return allowed


def is_allowed(allowed, host, port):
    host = host.lower().rstrip(".")
    if (host, port) in allowed:
        return True
    return any(
        pattern.startswith("*.") and host.endswith(pattern[1:]) and allowed_port == port
        for pattern, allowed_port in allowed
    )


def is_public(ip):
    """Whether `ip` is a global address, judging IPv6 addresses that embed IPv4 by that IPv4 address."""
    if ip.version == 6:
        if ip.ipv4_mapped is not None or ip in NAT64:
            return False  # the IPv4 address behind it is reached by another route: judged by no one
        embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and not is_public(embedded):
            return False
    return ip.is_global and not ip.is_multicast


def public_address(host, port):
    """The first global address of `host`, or None."""
    for *_, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if is_public(ipaddress.ip_address(address[0].split("%")[0])):
            return address[0]
    return None


def pipe(source, target, count=None):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            if count is not None:
                count(len(data))
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


class Reader:
    """Reads a client connection in whole request heads, bodies and TLS records."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buffer += chunk

    def take(self, size):
        while len(self.buffer) < size:
            self.fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def line(self):
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HEAD:
                raise Refused("431 Request Header Fields Too Large", "request line too long")
            self.fill()
        data, _, self.buffer = self.buffer.partition(b"\r\n")
        return data + b"\r\n"

    def head(self):
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HEAD:
                raise Refused("431 Request Header Fields Too Large", "request head too large")
            self.fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            raise Refused("431 Request Header Fields Too Large", "request head too large")
        return head + b"\r\n\r\n"


def split_host(authority, default_port):
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = authority.partition(":")
    return host, int(port or default_port)


def parse_request(head):
    """(method, host, port, headers) of a request head; the target and the Host header must agree."""
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, uri, _version = lines[0].split(" ", 2)
    except ValueError:
        raise Refused("400 Bad Request", "bad request line") from None
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    method = method.upper()
    try:
        if method == "CONNECT":
            host, port = split_host(uri, 443)
        elif uri.lower().startswith("http://"):
            host, port = split_host(uri[7:].split("/", 1)[0].rpartition("@")[2], 80)
        else:
            raise Refused("400 Bad Request", "only absolute http:// URIs or CONNECT")
    except ValueError:
        raise Refused("400 Bad Request", "bad request target") from None
    hosts = headers.get("host", [])
    if len(hosts) > 1 or (hosts and split_host(hosts[0], port)[0].lower().rstrip(".") != host.lower().rstrip(".")):
        raise Refused("403 Forbidden", f"the Host header does not name {host}")
    return method, host, port, headers


def forward_body(reader, upstream, headers):
    """Send the request's body on: Content-Length bytes, or chunks up to the last one."""
    if "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
        while True:
            size_line = reader.line()
            upstream.sendall(size_line)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    trailer = reader.line()
                    upstream.sendall(trailer)
                    if trailer == b"\r\n":
                        return
            upstream.sendall(reader.take(size + 2))
    lengths = set(headers.get("content-length", []))
    if len(lengths) > 1:
        raise Refused("400 Bad Request", "conflicting Content-Length headers")
    remaining = int(lengths.pop()) if lengths else 0
    while remaining > 0:
        data = reader.take(min(remaining, 65536))
        upstream.sendall(data)
        remaining -= len(data)


def server_name(record):
    """The SNI host name of a TLS ClientHello record, or None when it carries none."""
    body = record[5:]
    if len(body) < 4 or body[0] != 1:  # handshake type 1: ClientHello
        raise ValueError("not a ClientHello")
    at = 4 + 2 + 32  # handshake header, client version, random
    at += 1 + body[at]  # session id
    at += 2 + int.from_bytes(body[at : at + 2], "big")  # cipher suites
    at += 1 + body[at]  # compression methods
    if at + 2 > len(body):
        return None
    end = at + 2 + int.from_bytes(body[at : at + 2], "big")
    at += 2
    while at + 4 <= end:
        kind, size = int.from_bytes(body[at : at + 2], "big"), int.from_bytes(body[at + 2 : at + 4], "big")
        data = body[at + 4 : at + 4 + size]
        if kind == 0:  # server_name: list length, then (type 0 = host_name, length, name)
            if len(data) >= 5 and data[2] == 0:
                return data[5 : 5 + int.from_bytes(data[3:5], "big")].decode("ascii").lower().rstrip(".")
            raise ValueError("bad server_name extension")
        at += 4 + size
    return None


def check_client_hello(reader, host):
    """Refuse a TLS ClientHello naming another server than the CONNECT host; other protocols pass."""
    while not reader.buffer:
        reader.fill()
    if reader.buffer[0] != TLS_HANDSHAKE:
        return
    while len(reader.buffer) < 5:
        reader.fill()
    size = int.from_bytes(reader.buffer[3:5], "big")
    while len(reader.buffer) < 5 + size:
        reader.fill()
    try:
        name = server_name(reader.buffer[: 5 + size])
    except (ValueError, IndexError, UnicodeDecodeError):
        raise Refused("403 Forbidden", "unreadable TLS ClientHello") from None
    if name is not None and name != host.lower().rstrip("."):
        raise Refused("403 Forbidden", f"the TLS server name {name} is not {host}")


def handle(client, allowed, slots, ledger):
    try:
        serve(client, allowed, ledger=ledger)
    finally:
        slots.release()


def connect(host, port):
    try:
        address = public_address(host, port)
    except OSError as exc:  # the name does not resolve (from here)
        raise Refused("502 Bad Gateway", f"cannot resolve {host}: {exc.strerror or exc}") from None
    if address is None:
        raise Refused("403 Forbidden", f"{host} resolves only to local addresses")
    try:
        return socket.create_connection((address, port), timeout=15)
    except OSError as exc:
        raise Refused("502 Bad Gateway", f"cannot reach {host}:{port}: {exc}") from None


def counter(ledger, address, host, port, direction):
    """Adds a number of bytes to one direction of (client, host, port) in the ledger."""
    return lambda size: ledger.add(address, host, port, **{direction: size})


class Counted:
    """The upstream socket of one connection, counting what is sent to it into the ledger."""

    def __init__(self, sock, count):
        self.sock, self.count = sock, count

    def sendall(self, data):
        self.count(len(data))
        self.sock.sendall(data)


def serve(client, allowed, connect=connect, ledger=None):
    client.settimeout(30)
    ledger = ledger if ledger is not None else Ledger()
    try:
        address = client.getpeername()[0]
    except (OSError, IndexError, TypeError):  # a socket pair in tests has no address
        address = ""
    reader = Reader(client)
    upstream = None
    tunnelled = False
    host, port = "", 0
    try:
        head = reader.head()
        method, host, port, headers = parse_request(head)
        if not is_allowed(allowed, host, port):
            raise Refused("403 Forbidden", f"{host}:{port} is not in the tool's allow-list")
        upstream = connect(host, port)
        ledger.add(address, host, port, connections=1)
        sent = Counted(upstream, counter(ledger, address, host, port, "sent"))
        received = counter(ledger, address, host, port, "received")
        if method == "CONNECT":
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            tunnelled = True
            check_client_hello(reader, host)
            sent.sendall(reader.buffer)
            start_pipe(upstream, client, received)
            client.settimeout(None)
            pipe(client, upstream, sent.count)
            return
        start_pipe(upstream, client, received)
        while True:  # request by request, each for this host
            sent.sendall(head)
            forward_body(reader, sent, headers)
            client.settimeout(None)
            try:
                head = reader.head()
            except EOFError:
                upstream.shutdown(socket.SHUT_WR)
                return
            method, next_host, next_port, headers = parse_request(head)
            if method == "CONNECT" or (next_host.lower().rstrip("."), next_port) != (host.lower().rstrip("."), port):
                reason = f"a request on a connection to {host} names {next_host}"
                host, port = next_host, next_port
                raise Refused("403 Forbidden", reason)
    except Refused as exc:
        ledger.refuse(address, host, port, exc.reason)
        if tunnelled or upstream is not None:
            close(client, upstream)  # bytes of an answer may have gone out: no status line now
        else:
            refuse(client, exc.status, "pocket egress proxy: " + exc.reason)
    except (EOFError, OSError, ValueError):
        if upstream is None and not tunnelled:
            ledger.refuse(address, host, port, "bad request")
            refuse(client, "400 Bad Request", "pocket egress proxy: bad request")
        else:
            close(client, upstream)


def start_pipe(upstream, client, count=None):
    upstream.settimeout(None)
    threading.Thread(target=pipe, args=(upstream, client, count), daemon=True).start()


def close(*socks):
    for sock in socks:
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def main():
    port, clients, allowed = int(sys.argv[1]), ipaddress.ip_network(sys.argv[2]), parse_allowed(sys.argv[3:])
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))  # noqa: S104 - inside its own container, reachable from the internal network
    server.listen(64)
    ledger = Ledger()

    def write(text):
        sys.stdout.write(text)
        sys.stdout.flush()

    threading.Thread(target=answer_receipts, args=(ledger, sys.stdin, write), daemon=True).start()
    write("ready\n")
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
            ledger.refuse(address[0], "", 0, f"over {MAX_CLIENTS} connections at once")
            refuse(client, "503 Service Unavailable", f"pocket egress proxy: over {MAX_CLIENTS} connections at once")
            continue
        try:
            threading.Thread(target=handle, args=(client, allowed, slots, ledger), daemon=True).start()
        except RuntimeError:  # no thread left to start
            slots.release()
            ledger.refuse(address[0], "", 0, "busy")
            refuse(client, "503 Service Unavailable", "pocket egress proxy: busy")


if __name__ == "__main__":
    main()
