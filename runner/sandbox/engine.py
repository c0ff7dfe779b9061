"""The engine: where containers run. `Engine` is the seam a second backend implements; `DockerEngine` is
the Docker one, through the docker SDK's low-level client.

It owns the client (connected, and stale containers cleaned, on first use), the labels on what it creates,
the hardened container configuration, and create / start / kill / remove. Each container it starts has its
stdin, stdout and stderr attached (`Started.stream`): a call's environment and body travel there (a warm
container's under runc on its `channel`), never in the container's config.

Hardening, always: uid 65534, all capabilities dropped, no-new-privileges, read-only root with a small
/tmp tmpfs and a 16 MiB /dev/shm (and a 16 MB tmpfs over each VOLUME the image declares, so no anonymous
volume holds the tool's files on the host's disk), pids/memory/CPU limits, private IPC, no logs kept by the
engine, never the Docker socket, and no bind mount but a warm container's channel (an empty folder, read-only,
once its server connected: `channel`). `network` false is `--network none`; true is the default
bridge; a host list is an internal network whose only exit is the egress proxy (`egress`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runner.errors import SandboxError
from runner.invocation import NetworkReceipt
from runner.manifest import Manifest
from runner.sandbox.channel import Channel, Channels
from runner.sandbox.egress import EGRESS_PORT, EgressNetworks
from runner.sandbox.images import ImageBuilder, image_repository
from runner.sandbox.labels import LABEL, LABEL_MODE, LABEL_OWNER, LABEL_SANDBOX, LABEL_TOOL, USER, owner_alive
from runner.sandbox.limits import Limits
from runner.sandbox.stream import Stream
from runner.settings import Runtime, SandboxSettings

TMPFS = {"/tmp": "rw,nosuid,nodev,noexec,size=64m"}  # noqa: S108 - the container's own /tmp
# Over each VOLUME the image declares: without it the engine creates an anonymous volume there, writable
# host-disk storage that outlives the container.
VOLUME_TMPFS = "rw,nosuid,nodev,noexec,size=16m"
# /dev/shm stays writable (Python's multiprocessing needs it; the engine mounts it noexec,nosuid,nodev), but
# small: the engine's default is 64 MiB, memory the tool could fill beside /tmp.
SHM_SIZE = 16 * 1024 * 1024
DEFAULT_ADDRESS = "unix:///var/run/docker.sock"  # the docker SDK's, when DOCKER_HOST is unset
# gVisor's runtimes as scripts/setup-gvisor.sh registers them: without a network, and on the container's own
GVISOR_RUNTIMES = ("runsc", "runsc-net")
OOM_EVENT_WAIT = 5.0  # how long a SIGKILLed container's OOM flag is awaited (the engine's event may lag the exit)


@dataclass(frozen=True)
class Spec:
    """Everything a container is created from (pools are keyed by it)."""

    image: str
    tool: str
    limits_key: tuple[Any, ...]  # Limits.container_key: memory, cpus, pids, network
    command: tuple[str, ...]
    mode: str  # "call" or "warm"
    channel: bool = False  # its program (warm.py, prestart.py) takes a channel where the engine can offer one


@dataclass
class Started:
    """A started container with its attached stream, waiting for a call."""

    id: str
    stream: Stream
    started: float = field(default_factory=time.monotonic)
    address: str | None = None  # on its egress network, where its egress proxy's receipts name it
    channel: Channel | None = None  # its program's direct line, where there is one

    @property
    def transport(self) -> Stream | Channel:
        """Where calls go: the channel if there is one, else the attach stream."""
        return self.channel if self.channel is not None else self.stream

    def close(self) -> None:
        """Close the stream and the channel (the container goes on until it is removed)."""
        self.stream.close()
        if self.channel is not None:
            self.channel.close()


class Engine(Protocol):
    """What the sandbox needs of a place to run containers."""

    def image(self, manifest: Manifest) -> str: ...
    def start(self, spec: Spec) -> Started: ...
    def failure(self, exc: Exception) -> str: ...
    def why_died(self, exit_code: int | None, limits: Limits) -> str | None: ...
    def receipt(self, hosts: tuple[str, ...], started: Started) -> NetworkReceipt | None: ...
    def kill(self, cid: str) -> None: ...
    def remove(self, cid: str) -> None: ...
    def exit_code(self, cid: str) -> int | None: ...
    def oom_killed(self, cid: str, *, wait: bool = False) -> bool: ...
    def containers(self) -> set[str]: ...
    def cleanup_stale(self) -> list[str]: ...
    def close(self) -> None: ...


class DockerEngine:
    """Containers on one Docker engine. Thread-safe."""

    def __init__(self, settings: SandboxSettings, sandbox_id: str, owner: str, say: Callable[[str], None]):
        self.settings = settings
        self.sandbox_id = sandbox_id
        self.owner = owner
        self.egress = EgressNetworks(self)
        self.images = ImageBuilder(self, settings, say)
        self._lock = threading.Lock()
        self._api: Any = None
        self._stale_removed: list[str] = []
        self._volumes: dict[str, dict[str, str]] = {}  # image -> tmpfs mounts over its VOLUMEs
        self._channels = Channels()
        self._live: set[str] = set()  # every container id created and not yet removed
        self._unremoved: set[str] = set()  # removals that failed (the engine was down): tried again
        self._closed = False

    @property
    def api(self) -> Any:
        """The docker SDK's low-level client, created (and stale containers cleaned) on first use."""
        if self._api is None:
            with self._lock:
                if self._api is None:
                    import docker

                    try:
                        api = docker.APIClient(base_url=self.address, version="auto", timeout=120, max_pool_size=32)
                        api.ping()
                    except Exception as exc:
                        raise SandboxError(self._unreachable(exc)) from None
                    self._check_runtime(api)
                    self._stale_removed = self._cleanup_stale(api)
                    self._api = api
        return self._api

    @property
    def address(self) -> str:
        return os.environ.get("DOCKER_HOST") or DEFAULT_ADDRESS

    def _check_runtime(self, api: Any) -> None:
        if self.settings.runtime is Runtime.RUNC:
            return
        registered = set((api.info().get("Runtimes") or {}).keys())
        if not set(GVISOR_RUNTIMES) <= registered:
            raise SandboxError(
                f"sandbox.runtime = 'runsc' needs the Docker engine's runtimes {' and '.join(GVISOR_RUNTIMES)} "
                f"(gVisor), and it has {', '.join(sorted(registered)) or 'none'}: run `bash scripts/setup.sh --gvisor`"
            )

    def runtime(self, network_mode: str) -> str:
        """The engine runtime for a container: gVisor's must be told whether the container has a network."""
        if self.settings.runtime is Runtime.RUNC:
            return "runc"
        return GVISOR_RUNTIMES[0] if network_mode == "none" else GVISOR_RUNTIMES[1]

    def receipt(self, hosts: tuple[str, ...], started: Started) -> NetworkReceipt:
        """Where the call in `started` connected, asked of the egress proxy serving `hosts` (SandboxError when
        nobody can tell)."""
        return self.egress.receipt(hosts, started.address)

    def why_died(self, exit_code: int | None, limits: Limits) -> str | None:
        """Why a container ended before its launcher could report the tool's exit, when the runtime tells.

        gVisor's kernel is a Go program that dies with code 2 when it cannot start a host thread: under runsc
        the pids limit counts those threads too, and a tool that forks without end reaches it."""
        if self.settings.runtime is Runtime.RUNSC and exit_code == 2:
            return (
                f"the gVisor sandbox stopped before the tool ended (its kernel could not start a thread): the tool "
                f"reached the pids limit ({limits.pids}), which under runsc also counts the sandbox kernel's threads"
            )
        return None

    def _unreachable(self, exc: BaseException) -> str:
        where = "DOCKER_HOST" if os.environ.get("DOCKER_HOST") else "the default; set DOCKER_HOST for another"
        return (
            f"the Docker engine at {self.address} ({where}) does not answer ({_reason(exc)}): is dockerd running, "
            "and may this user use its socket?"
        )

    def failure(self, exc: Exception) -> str:
        """What to tell a person about an engine call that raised `exc`."""
        import requests

        if isinstance(exc, requests.exceptions.ConnectionError):
            return self._unreachable(exc)
        explanation = getattr(exc, "explanation", None) or exc
        return f"the sandbox could not start the tool's container: {explanation}"

    def labels(self) -> dict[str, str]:
        return {LABEL: "1", LABEL_OWNER: self.owner, LABEL_SANDBOX: self.sandbox_id}

    def cleanup_stale(self) -> list[str]:
        """Remove containers and networks whose owner label names a runner process on this host that no longer
        runs. Runs once by itself when the engine is first used; returns every id removed so far."""
        first_use = self._api is None
        api = self.api
        if not first_use:
            self._stale_removed += self._cleanup_stale(api)
            with self._lock:
                retry = set(self._unremoved)
            self._stale_removed += [cid for cid in retry if self._remove(cid)]  # ours, missed while it was down
        return list(self._stale_removed)

    def _cleanup_stale(self, api: Any) -> list[str]:
        removed = []
        with contextlib.suppress(Exception):
            for kind, listed, remove in (
                ("container", api.containers(all=True, filters={"label": LABEL_OWNER}), api.remove_container),
                ("network", api.networks(filters={"label": LABEL_OWNER}), api.remove_network),
            ):
                for item in listed:
                    owner = (item.get("Labels") or {}).get(LABEL_OWNER, "")
                    if owner and owner != self.owner and not owner_alive(owner):
                        with contextlib.suppress(Exception):
                            remove(item["Id"], **({"force": True, "v": True} if kind == "container" else {}))
                            removed.append(item["Id"])
        return removed

    def host_config(self, image: str, **limits: Any) -> dict[str, Any]:
        """The hardened host configuration every container gets, with `limits` (memory, cpus, network...)."""
        import docker.types

        return self.api.create_host_config(
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            tmpfs={**self._volume_tmpfs(image), **TMPFS},
            log_config=docker.types.LogConfig(type="none"),
            ipc_mode="private",
            shm_size=SHM_SIZE,
            **limits,
        )

    def image(self, manifest: Manifest) -> str:
        """The tag of the tool's image, built first when no image holds exactly these contents."""
        return self.images.image(manifest)

    def track(self, cid: str) -> None:
        """Count a created container as this engine's, so close() removes it."""
        with self._lock:
            self._live.add(cid)

    def start(self, spec: Spec) -> Started:
        """Create, attach and start one container of `spec` (about 0.3-0.4 s)."""
        memory_mb, cpus, pids, network = spec.limits_key
        api = self.api
        environment = {"HOME": "/tmp"}  # noqa: S108
        dns = None
        if isinstance(network, tuple):
            network_mode, proxy_ip = self.egress.network(network)
            proxy = f"http://{proxy_ip}:{EGRESS_PORT}"
            dns = ["timeout:1", "attempts:1"]  # names resolve at the proxy: a lookup in here fails in 1 s, not 10
            environment.update(HTTP_PROXY=proxy, HTTPS_PROXY=proxy, http_proxy=proxy, https_proxy=proxy)
        else:
            network_mode = "bridge" if network else "none"
        runtime = self.runtime(network_mode)
        host_config = self.host_config(
            spec.image, pids_limit=pids, mem_limit=f"{memory_mb}m", memswap_limit=f"{memory_mb}m",
            nano_cpus=int(cpus * 1e9), network_mode=network_mode, dns_opt=dns, runtime=runtime,
        )  # fmt: skip
        listener = self._channels.open() if spec.channel and self._shares_folders(runtime) else None
        if listener is not None:
            environment.update(listener.environment)
            host_config["Binds"] = listener.binds
        name = f"pocket-{image_repository(spec.tool).split('/', 1)[1][:40]}-{uuid.uuid4().hex[:10]}"
        try:
            container = api.create_container(
                spec.image,
                command=list(spec.command),
                user=USER,
                hostname="pocket-sandbox",
                working_dir="/tool",
                environment=environment,
                stdin_open=True,  # with detach=False the SDK also sets StdinOnce: stdin closes when we close ours
                tty=False,
                network_disabled=network is False,
                labels={**self.labels(), LABEL_TOOL: spec.tool, LABEL_MODE: spec.mode},
                host_config=host_config,
                name=name,
            )
        except BaseException as exc:  # the engine may have made it though its answer never came (a signal, a timeout)
            self.remove(name)
            if listener is None:
                raise
            listener.close()
            if "mount" not in str(exc).lower():
                raise
            self._channels.failed()  # an engine that cannot mount this host's folder (Docker Desktop): without
            return self.start(spec)
        cid = container["Id"]
        self.track(cid)
        address = channel = None
        try:
            stream = Stream(api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}))
            api.start(cid)
            if isinstance(network, tuple):
                address = self.egress.address(cid, network_mode)
            if listener is not None:
                channel = listener.accept(stream)
                if channel is None:
                    self._channels.failed()
        except BaseException:  # SIGTERM's SystemExit too: the container must not outlive the call
            if listener is not None:
                listener.close()
            self.remove(cid)
            if self.settings.runtime is Runtime.RUNSC:
                _stop_runsc_leftovers(cid)
            raise
        if self._closed:  # closed while this one started: close() may have missed it
            stream.close()
            if channel is not None:
                channel.close()
            self.remove(cid)
            raise SandboxError("the sandbox is closed")
        return Started(cid, stream, address=address, channel=channel)

    def _shares_folders(self, runtime: str) -> bool:
        """Whether a folder of this host can hold a socket a container of `runtime` connects to: a local engine
        (its unix socket) under runc."""
        return runtime == "runc" and self.address.startswith("unix://")

    def _volume_tmpfs(self, image: str) -> dict[str, str]:
        """A small tmpfs over each VOLUME the image declares, so the engine creates no anonymous volume."""
        with self._lock:
            known = self._volumes.get(image)
        if known is None:
            declared = (self.api.inspect_image(image).get("Config") or {}).get("Volumes") or {}
            known = {path: VOLUME_TMPFS for path in declared}
            with self._lock:
                self._volumes[image] = known
        return known

    def kill(self, cid: str) -> None:
        with contextlib.suppress(Exception):
            self.api.kill(cid)

    def remove(self, cid: str) -> None:
        """Remove a container (gone already counts). One the engine could not remove, because it was down or
        restarting, stays known: it is tried again with the next removal that works, and at close."""
        if self._remove(cid):
            with self._lock:
                retry, self._unremoved = self._unremoved, set()
            for other in retry:
                self._remove(other)

    def _remove(self, cid: str) -> bool:
        import docker.errors

        try:
            self.api.remove_container(cid, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except Exception:
            with self._lock:
                self._unremoved.add(cid)
            return False
        with self._lock:
            self._live.discard(cid)
            self._unremoved.discard(cid)
        return True

    def exit_code(self, cid: str) -> int | None:
        try:
            return int(self.api.wait(cid, timeout=10)["StatusCode"])
        except Exception:
            return None

    def oom_killed(self, cid: str, *, wait: bool = False) -> bool:
        """Whether the kernel killed a process of the container for memory. Asked after a 137 (SIGKILL) only;
        the engine learns of an OOM kill from its own event, which may come a little after the exit."""
        if wait:
            self.exit_code(cid)
        deadline = time.monotonic() + OOM_EVENT_WAIT
        while True:
            try:
                if self.api.inspect_container(cid)["State"].get("OOMKilled"):
                    return True
            except Exception:
                return False
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def containers(self) -> set[str]:
        """Ids of the containers this engine created and has not removed yet."""
        with self._lock:
            return set(self._live)

    def close(self) -> None:
        """Remove every container and network this engine created, the images its edited tools superseded,
        and close the client."""
        self._closed = True
        if self._api is None:
            return
        for cid in self.containers():
            self.remove(cid)
        self.images.close()
        self.egress.close()
        self._channels.close()
        with contextlib.suppress(Exception):
            self._api.close()


def _reason(exc: BaseException) -> str:
    """The system's words for why a connection failed ("Connection refused"), from the exception's chain."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        if getattr(seen, "strerror", None):
            return str(seen.strerror)
        inner = [arg for arg in seen.args if isinstance(arg, BaseException)]
        seen = inner[0] if inner else seen.__cause__ or seen.__context__
    return type(exc).__name__


def _stop_runsc_leftovers(cid: str) -> None:
    """Kill the gVisor processes a failed start left for container `cid`: runsc (2022) keeps its gofer and
    sandbox processes when the container's process cannot start, and removing the container does not end
    them. Only processes naming this container are touched; on a remote engine there are none to see."""
    killed = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and _names_runsc_container(proc, cid):
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(proc)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(_names_runsc_container(proc, cid) for proc in killed):
        time.sleep(0.02)


def _names_runsc_container(proc: Path, cid: str) -> bool:
    try:
        command = (proc / "cmdline").read_bytes()  # empty once the process has exited
    except OSError:
        return False
    return command.startswith(b"runsc") and cid.encode() in command
