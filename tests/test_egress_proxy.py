"""The egress proxy's checks, driven through its real request handling with sockets.

The proxy runs in a container in production (tests/test_sandbox.py covers it there); here its `serve`
runs in a thread with a socket pair as the tool's connection and a local server as the upstream, so
every request it lets through can be seen arriving, and every one it refuses can be seen not arriving.
Only the name lookup is replaced (nothing on loopback is a global address).
"""

import ipaddress
import json
import socket
import ssl
import threading

import pytest

from runner.sandbox.container import egress_proxy as proxy

ALLOWED = proxy.parse_allowed(["api.allowed.test", "*.googleapis.com"])


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.17.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254",
        "198.18.0.1", "192.0.2.1", "198.51.100.7", "203.0.113.1", "224.0.0.1", "0.0.0.0",  # noqa: S104
        "::1", "fe80::1", "fc00::1", "2001:db8::1", "::ffff:127.0.0.1", "::ffff:8.8.8.8",
        "64:ff9b::808:808",  # NAT64 of a public address: the gateway, not the proxy, would pick the route
        "2002:c0a8:101::1",  # 6to4 embedding 192.168.1.1
        # Teredo: server 65.54.44.143, client 10.0.0.1 (stored inverted in the last 32 bits)
        str(ipaddress.IPv6Address((0x20010000 << 96) | (0x41362C8F << 64) | (~0x0A000001 & 0xFFFFFFFF))),
    ],
)  # fmt: skip
def test_addresses_that_are_not_global_are_refused(address):
    assert proxy.is_public(ipaddress.ip_address(address)) is False


@pytest.mark.parametrize("address", ["8.8.8.8", "151.101.0.223", "2606:4700::1111", "2002:808:808::1"])
def test_global_addresses_are_let_through(address):
    assert proxy.is_public(ipaddress.ip_address(address)) is True


@pytest.mark.parametrize(
    ("host", "port", "allowed"),
    [
        ("api.allowed.test", 443, True),
        ("API.Allowed.Test.", 80, True),
        ("other.allowed.test", 443, False),
        ("www.googleapis.com", 443, True),
        ("gmail.googleapis.com", 80, True),
        ("a.b.googleapis.com", 443, True),
        ("googleapis.com", 443, False),  # the pattern names what is below it, not the domain itself
        ("evilgoogleapis.com", 443, False),
        ("www.googleapis.com.evil.test", 443, False),
        ("www.googleapis.com", 22, False),
    ],
)
def test_allow_list_patterns(host, port, allowed):
    assert proxy.is_allowed(ALLOWED, host, port) is allowed


class Upstream:
    """A local server standing in for the allowed host: records what arrives, answers each request."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.received = bytearray()
        self.connections = 0
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.server.accept()
        self.connections += 1
        conn.settimeout(5)
        try:
            while chunk := conn.recv(65536):
                self.received += chunk
                if chunk.startswith(b"GET") or chunk.startswith(b"POST"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass
        finally:
            conn.close()
            self.done.set()

    def connect(self, host, port):
        return socket.create_connection(self.server.getsockname(), timeout=5)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected (tool, proxy side) pair over loopback TCP: the proxy side has the tool's address as peer."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        tool = socket.create_connection(server.getsockname())
        return tool, server.accept()[0]


def run_proxy(sent: bytes, upstream: Upstream, ledger: proxy.Ledger | None = None) -> bytes:
    """Send `sent` as the tool would, then read what the proxy answers until it closes the connection."""
    tool, proxy_side = tcp_pair() if ledger is not None else socket.socketpair()
    worker = threading.Thread(
        target=proxy.serve, args=(proxy_side, ALLOWED, upstream.connect), kwargs={"ledger": ledger}, daemon=True
    )
    worker.start()
    tool.sendall(sent)
    tool.shutdown(socket.SHUT_WR)
    tool.settimeout(5)
    answer = bytearray()
    try:
        while chunk := tool.recv(65536):
            answer += chunk
    except OSError:
        pass
    worker.join(5)
    upstream.done.wait(2)
    return bytes(answer)


def client_hello(server_name: str) -> bytes:
    """The first flight of a real TLS client for `server_name`."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_a_request_whose_host_header_names_another_host_is_refused_before_any_connection():
    upstream = Upstream()
    answer = run_proxy(b"GET http://api.allowed.test/ HTTP/1.1\r\nHost: evil.example\r\n\r\n", upstream)
    assert answer.startswith(b"HTTP/1.1 403 Forbidden") and b"Host header" in answer
    assert upstream.connections == 0


def test_a_pipelined_request_for_another_host_never_reaches_the_upstream():
    upstream = Upstream()
    first = b"GET http://api.allowed.test/a HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n"
    second = b"GET http://evil.example/b HTTP/1.1\r\nHost: evil.example\r\n\r\n"
    run_proxy(first + second, upstream)
    assert bytes(upstream.received) == first


def test_a_pipelined_request_with_a_forged_host_header_never_reaches_the_upstream():
    upstream = Upstream()
    first = b"GET http://api.allowed.test/a HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n"
    second = b"GET http://api.allowed.test/b HTTP/1.1\r\nHost: evil.example\r\n\r\n"
    run_proxy(first + second, upstream)
    assert bytes(upstream.received) == first


def test_pipelined_requests_for_the_same_host_pass_with_their_bodies_intact():
    upstream = Upstream()
    first = (  # a body that looks like the end of a head and the start of a request
        b"POST http://api.allowed.test/a HTTP/1.1\r\nHost: api.allowed.test\r\nContent-Length: 11\r\n\r\n"
        b"hello\r\n\r\nGE"
    )
    second = (
        b"POST http://api.allowed.test/b HTTP/1.1\r\nHost: api.allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nGET h\r\n0\r\n\r\n"
    )
    third = b"GET http://api.allowed.test/c HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n"
    answer = run_proxy(first + second + third, upstream)
    assert bytes(upstream.received) == first + second + third
    assert answer.count(b"HTTP/1.1 200 OK") >= 1


def test_a_tls_client_hello_for_another_server_name_is_refused():
    upstream = Upstream()
    connect = b"CONNECT api.allowed.test:443 HTTP/1.1\r\nHost: api.allowed.test:443\r\n\r\n"
    answer = run_proxy(connect + client_hello("fronted.example"), upstream)
    assert answer == b"HTTP/1.1 200 Connection established\r\n\r\n"  # then closed, nothing forwarded
    assert bytes(upstream.received) == b""


def test_a_tls_client_hello_for_the_connect_host_goes_through_unchanged():
    upstream = Upstream()
    hello = client_hello("API.allowed.test")
    connect = b"CONNECT api.allowed.test:443 HTTP/1.1\r\nHost: api.allowed.test:443\r\n\r\n"
    run_proxy(connect + hello, upstream)
    assert bytes(upstream.received) == hello


def test_a_connect_to_a_host_off_the_list_is_refused():
    upstream = Upstream()
    answer = run_proxy(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n", upstream)
    assert answer.startswith(b"HTTP/1.1 403 Forbidden") and b"allow-list" in answer
    assert upstream.connections == 0


def test_a_host_that_does_not_resolve_is_a_bad_gateway_naming_it(monkeypatch):
    def no_such_host(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(proxy.socket, "getaddrinfo", no_such_host)
    with pytest.raises(proxy.Refused) as refused:
        proxy.connect("api.allowed.test", 443)
    assert (refused.value.status, refused.value.reason) == (
        "502 Bad Gateway",
        "cannot resolve api.allowed.test: Name or service not known",
    )


def test_the_ledger_counts_a_clients_bytes_each_way_and_its_refusals_until_the_runner_takes_them():
    ledger = proxy.Ledger()
    request = b"GET http://api.allowed.test/a HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n"
    answer = run_proxy(request, Upstream(), ledger)
    assert answer == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    run_proxy(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n", Upstream(), ledger)
    run_proxy(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n", Upstream(), ledger)  # the same refusal: once
    lines: list[str] = []
    proxy.answer_receipts(ledger, ["receipt 127.0.0.1\n", "nonsense\n", "receipt 127.0.0.1\n"], lines.append)
    first, again = (json.loads(line) for line in lines)
    assert first == {
        "receipt": "127.0.0.1",
        "reached": [
            {
                "host": "api.allowed.test",
                "port": 80,
                "connections": 1,
                "bytes_sent": len(request),
                "bytes_received": len(answer),
            }
        ],
        "refused": [{"host": "example.com", "port": 443, "reason": "example.com:443 is not in the tool's allow-list"}],
    }
    assert again == {"receipt": "127.0.0.1", "reached": [], "refused": []}  # taken: the next call starts at zero
