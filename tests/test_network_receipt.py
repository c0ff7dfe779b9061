"""The network receipt of a call: a real tool in its container, through the real egress proxy container, reaching
an allowed host (bytes each way) and refused another; concurrent calls each get their own receipt; the receipt
is on the Invocation and in the audit record.

The allowed host is a server in a container of this test, on an internal Docker network (no route out, no
address for the host machine) whose subnet the proxy counts as public: 192.88.99.0/24, the retired 6to4 relay
anycast prefix (RFC 7526), which nothing here routes anywhere else. The proxy is attached to that network and
finds the server by its alias there, through the engine's DNS; nothing leaves this machine.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from runner.audit import audit_log
from runner.invocation import HostTraffic, NetworkAccess, NetworkReceipt, RefusedHost
from runner.pocket import Pocket
from tests.helpers import TOOLS, settings

pytestmark = pytest.mark.docker

UPSTREAM_ALIAS = "api.upstream.test"
SUBNET = "192.88.99.0/24"
BODY = 1000
UPSTREAM = f"""
import socket
server = socket.create_server(("0.0.0.0", 8080))
print("ready", flush=True)
while True:
    client, _ = server.accept()
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        head += client.recv(4096)
    client.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: {BODY}\\r\\nConnection: close\\r\\n\\r\\n" + b"x" * {BODY})
    client.close()
"""
REFUSED = RefusedHost("example.com", 443, "example.com:443 is not in the tool's allow-list")


@pytest.fixture
def upstream(docker_api: Any) -> Iterator[str]:
    """The allowed host: a server on an internal network of its own; yields that network's id."""
    import docker.types

    labels = {"pocket-runner.test": "receipt"}
    network = docker_api.create_network(
        f"pocket-test-upstream-{uuid.uuid4().hex[:8]}", internal=True, labels=labels,
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=SUBNET)]),
        options={"com.docker.network.bridge.inhibit_ipv4": "true"},
    )["Id"]  # fmt: skip
    server = None
    try:
        server = docker_api.create_container(
            "python:3.11-slim", command=["python3", "-c", UPSTREAM], user="65534", labels=labels,
            host_config=docker_api.create_host_config(network_mode=network, cap_drop=["ALL"], read_only=True),
            networking_config=docker_api.create_networking_config(
                {network: docker_api.create_endpoint_config(aliases=[UPSTREAM_ALIAS])}
            ),
        )["Id"]  # fmt: skip
        docker_api.start(server)
        deadline = time.monotonic() + 60
        while b"ready" not in docker_api.logs(server):
            assert time.monotonic() < deadline, "the upstream server did not start"
            time.sleep(0.1)
        yield network
    finally:
        if server is not None:
            docker_api.remove_container(server, force=True)
        docker_api.remove_network(network)


@pytest.mark.parametrize("warm", [False, True], ids=["call", "warm"])
def test_each_call_gets_the_receipt_of_its_own_connections(tmp_path, docker_api, upstream, warm):
    """In warm mode a container serves call after call: each receipt holds what flowed since the last one."""
    sandbox = {"pool_size": 2, "warm_tools": ["receipt"] if warm else []}
    with Pocket([TOOLS / "receipt"], settings=settings(tmp_path, sandbox=sandbox)) as pocket:
        first = pocket.invoke("receipt", {"fetch": False}, user_id="ada")  # starts the egress proxy
        assert first.ok, first
        assert first.value == {"refused": "HTTP/1.1 403 Forbidden"}
        assert first.network == NetworkReceipt(NetworkAccess.HOSTS, (), (REFUSED,))
        (proxy,) = docker_api.containers(
            filters={"label": ["pocket-runner.mode=egress-proxy", f"pocket-runner.sandbox={pocket.sandbox.id}"]}
        )
        docker_api.connect_container_to_network(proxy["Id"], upstream)  # the allowed host is there now
        paths = ["/a", "/" + "b" * 300]
        with concurrent.futures.ThreadPoolExecutor(2) as threads:
            calls = list(threads.map(lambda path: pocket.invoke("receipt", {"fetch": True, "path": path}), paths))
        docker_api.disconnect_container_from_network(proxy["Id"], upstream)
    for call in calls:
        assert call.ok, call
        assert call.value["status"] == "HTTP/1.1 200 OK" and call.value["refused"] == "HTTP/1.1 403 Forbidden"
        reached = HostTraffic(UPSTREAM_ALIAS, 8080, 1, call.value["sent"], call.value["received"])
        assert call.network == NetworkReceipt(NetworkAccess.HOSTS, (reached,), (REFUSED,))
    assert calls[0].value["sent"] + 299 == calls[1].value["sent"]  # each call has its own bytes, not the other's
    assert all(call.value["received"] > BODY for call in calls)

    records = audit_log(settings(tmp_path)).read(tool="receipt")
    assert [record.network for record in records[:1]] == [first.network]
    assert sorted((r.network.reached[0].bytes_sent for r in records[1:]), key=int) == [c.value["sent"] for c in calls]
    attributes = records[1].span_attributes()
    assert attributes["pocket.network.reached"] == ("api.upstream.test:8080",)
    assert attributes["pocket.network.refused"] == ("example.com:443",)
