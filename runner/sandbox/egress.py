"""Egress networks: for a tool whose manifest lists hosts, an internal network (no route out, and no address
for the host on it) whose only exit is a hardened proxy container (`container/egress_proxy.py`) allowing
exactly those hosts at public addresses. One network and proxy per host list, made on first use.

The proxy's attach stream stays open: after each call the sandbox asks it for the call's `NetworkReceipt`, by
the address of the call's container on the internal network (one container serves one call at a time, and its
address is not given to another container before it is removed, which happens after the receipt)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from runner.errors import SandboxError
from runner.invocation import NetworkAccess, NetworkReceipt
from runner.sandbox.labels import LABEL_MODE, USER
from runner.sandbox.stream import Stream

if TYPE_CHECKING:
    from runner.sandbox.engine import DockerEngine

EGRESS_ALIAS = "pocket-egress"
EGRESS_PORT = 3128
PROXY_START_TIMEOUT = 15.0
RECEIPT_TIMEOUT = 30.0  # the proxy answers in a millisecond; more only when the machine is overloaded


@dataclass
class _Proxy:
    """One host list's internal network and the proxy container that is its only exit."""

    network: str
    address: str  # the proxy's on the internal network
    stream: Stream  # its stdin (receipt requests) and stdout (receipts)
    lock: threading.Lock = field(default_factory=threading.Lock)
    lines: bytearray = field(default_factory=bytearray)


class EgressNetworks:
    """The egress networks and proxies of one engine."""

    def __init__(self, engine: DockerEngine):
        self._engine = engine
        self._lock = threading.Lock()
        self._proxies: dict[tuple[str, ...], _Proxy] = {}

    def network(self, hosts: tuple[str, ...]) -> tuple[str, str]:
        """(network id, proxy address) of the network whose only exit is a proxy allowing `hosts`."""
        proxy = self._proxy(hosts)
        return proxy.network, proxy.address

    def receipt(self, hosts: tuple[str, ...], client: str | None) -> NetworkReceipt:
        """What the container at `client` reached and was refused since the last receipt for that address.

        A receipt that cannot be had (the proxy died, the container's address is unknown) raises SandboxError:
        a call must not look as if it connected nowhere when nobody could tell."""
        if not client:
            raise SandboxError("the call's container has no address on its egress network: no network receipt")
        with self._lock:
            proxy = self._proxies.get(hosts)
        if proxy is None:
            raise SandboxError(f"no egress proxy runs for {', '.join(hosts)}: no network receipt")
        with proxy.lock:
            deadline = time.monotonic() + RECEIPT_TIMEOUT
            answer: list[dict] = []

            def on_frame(kind: int, payload: bytes) -> bool:
                if kind == 1:  # stdout; stderr would be a traceback, and the deadline says enough
                    proxy.lines.extend(payload)
                while b"\n" in proxy.lines:
                    line, _, rest = bytes(proxy.lines).partition(b"\n")
                    proxy.lines[:] = rest
                    with contextlib.suppress(ValueError):
                        document = json.loads(line)
                        if isinstance(document, dict) and document.get("receipt") == client:
                            answer.append(document)
                            return False
                return True

            if proxy.stream.send(f"receipt {client}\n".encode(), deadline):
                proxy.stream.read_until(deadline, on_frame)
        if not answer:
            raise SandboxError(f"the egress proxy for {', '.join(hosts)} gave no network receipt")
        return NetworkReceipt.from_dict({**answer[0], "access": NetworkAccess.HOSTS.value})

    def _proxy(self, hosts: tuple[str, ...]) -> _Proxy:
        with self._lock:
            known = self._proxies.get(hosts)
            if known is not None:
                return known
            api = self._engine.api
            suffix = hashlib.sha256("\n".join(hosts).encode()).hexdigest()[:8]
            # inhibit_ipv4: the host side of the bridge gets no address, so the host (and what listens on
            # it) is unreachable from this network too; only the proxy, a container on it, is there.
            network = api.create_network(
                f"pocket-egress-{self._engine.sandbox_id}-{suffix}", internal=True, labels=self._engine.labels(),
                options={"com.docker.network.bridge.inhibit_ipv4": "true"},
            )["Id"]  # fmt: skip
            try:
                subnet = api.inspect_network(network)["IPAM"]["Config"][0]["Subnet"]
                proxy, stream = self._start_proxy(network, subnet, hosts)
                proxy_ip = self.address(proxy, network)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    api.remove_network(network)
                raise SandboxError(f"cannot start the egress proxy for {', '.join(hosts)}: {exc}") from None
            self._proxies[hosts] = _Proxy(network, proxy_ip, stream)
            return self._proxies[hosts]

    def address(self, container: str, network: str) -> str:
        """A container's address on an egress network."""
        networks = self._engine.api.inspect_container(container)["NetworkSettings"]["Networks"]
        return next(n["IPAddress"] for n in networks.values() if n.get("NetworkID") == network)

    def _start_proxy(self, network: str, subnet: str, hosts: tuple[str, ...]) -> tuple[str, Stream]:
        engine = self._engine
        api, image = engine.api, engine.settings.python_image
        host_config = engine.host_config(
            # Under gVisor the sandbox's own threads and memory count against these too: with 256 pids, a flood of
            # 100 connections (a thread each) made its Go runtime fail to start a thread and exit (status 2)
            image, pids_limit=1024, mem_limit="128m", memswap_limit="128m", nano_cpus=500_000_000,
            network_mode="bridge", runtime=engine.runtime("bridge"),  # it parses what tools send: under gVisor too
        )  # fmt: skip
        source = resources.files("runner.sandbox.container").joinpath("egress_proxy.py").read_text()
        proxy = api.create_container(
            image, command=["python3", "-c", source, str(EGRESS_PORT), subnet, *hosts], user=USER,
            labels={**engine.labels(), LABEL_MODE: "egress-proxy"}, host_config=host_config,
            name=f"pocket-egress-{engine.sandbox_id}-{uuid.uuid4().hex[:8]}", stdin_open=True,
        )["Id"]  # fmt: skip
        engine.track(proxy)
        api.connect_container_to_network(proxy, network, aliases=[EGRESS_ALIAS])
        stream = Stream(api.attach_socket(proxy, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}))
        api.start(proxy)
        seen = bytearray()

        def ready(kind: int, payload: bytes) -> bool:
            seen.extend(payload)
            return b"ready" not in seen

        state = stream.read_until(time.monotonic() + PROXY_START_TIMEOUT, ready)
        if state != "stop":
            stream.close()
            raise SandboxError(f"the egress proxy did not start: {bytes(seen[-500:]).decode('utf-8', 'replace')}")
        return proxy, stream

    def close(self) -> None:
        """Remove the networks (their proxies are containers of the engine, removed before)."""
        with self._lock:
            proxies, self._proxies = list(self._proxies.values()), {}
        for proxy in proxies:
            proxy.stream.close()
            with contextlib.suppress(Exception):
                self._engine.api.remove_network(proxy.network)
