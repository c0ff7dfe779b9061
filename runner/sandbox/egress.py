"""Egress networks: for a tool whose manifest lists hosts, an internal network (no route out, and no address
for the host on it) whose only exit is a hardened proxy container (`container/egress_proxy.py`) allowing
exactly those hosts at public addresses. One network and proxy per host list, made on first use."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import uuid
from importlib import resources
from typing import TYPE_CHECKING

from runner.errors import SandboxError
from runner.sandbox.labels import LABEL_MODE, USER
from runner.sandbox.stream import Stream

if TYPE_CHECKING:
    from runner.sandbox.engine import DockerEngine

EGRESS_ALIAS = "pocket-egress"
EGRESS_PORT = 3128
PROXY_START_TIMEOUT = 15.0


class EgressNetworks:
    """The egress networks and proxies of one engine."""

    def __init__(self, engine: DockerEngine):
        self._engine = engine
        self._lock = threading.Lock()
        self._networks: dict[tuple[str, ...], tuple[str, str]] = {}  # hosts -> (internal network id, proxy ip)

    def network(self, hosts: tuple[str, ...]) -> tuple[str, str]:
        """(network id, proxy address) of the network whose only exit is a proxy allowing `hosts`."""
        with self._lock:
            known = self._networks.get(hosts)
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
                proxy = self._start_proxy(network, subnet, hosts)
                networks = api.inspect_container(proxy)["NetworkSettings"]["Networks"]
                proxy_ip = next(n["IPAddress"] for n in networks.values() if n.get("NetworkID") == network)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    api.remove_network(network)
                raise SandboxError(f"cannot start the egress proxy for {', '.join(hosts)}: {exc}") from None
            self._networks[hosts] = (network, proxy_ip)
            return network, proxy_ip

    def _start_proxy(self, network: str, subnet: str, hosts: tuple[str, ...]) -> str:
        engine = self._engine
        api, image = engine.api, engine.settings.python_image
        host_config = engine.host_config(
            image, pids_limit=256, mem_limit="64m", memswap_limit="64m", nano_cpus=500_000_000, network_mode="bridge",
            runtime=engine.runtime("bridge"),  # it parses what tools send: under gVisor too when they are
        )  # fmt: skip
        source = resources.files("runner.sandbox.container").joinpath("egress_proxy.py").read_text()
        proxy = api.create_container(
            image, command=["python3", "-c", source, str(EGRESS_PORT), subnet, *hosts], user=USER,
            labels={**engine.labels(), LABEL_MODE: "egress-proxy"}, host_config=host_config,
            name=f"pocket-egress-{engine.sandbox_id}-{uuid.uuid4().hex[:8]}",
        )["Id"]  # fmt: skip
        engine.track(proxy)
        api.connect_container_to_network(proxy, network, aliases=[EGRESS_ALIAS])
        stream = Stream(api.attach_socket(proxy, params={"stdout": 1, "stderr": 1, "stream": 1}))
        api.start(proxy)
        seen = bytearray()

        def ready(kind: int, payload: bytes) -> bool:
            seen.extend(payload)
            return b"ready" not in seen

        state = stream.read_until(time.monotonic() + PROXY_START_TIMEOUT, ready)
        stream.close()
        if state != "stop":
            raise SandboxError(f"the egress proxy did not start: {bytes(seen[-500:]).decode('utf-8', 'replace')}")
        return proxy

    def close(self) -> None:
        """Remove the networks (their proxies are containers of the engine, removed before)."""
        with self._lock:
            networks, self._networks = [network for network, _ in self._networks.values()], {}
        for network in networks:
            with contextlib.suppress(Exception):
                self._engine.api.remove_network(network)
