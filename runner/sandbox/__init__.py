"""The sandbox: every tool call runs in its own hardened Docker container, through the docker SDK.

This package is `Sandbox` (engine client, containers, calls, warm mode, egress networks, cleanup) and
the parts it is built from: `limits` (what a call may use; the launcher's input), `images` (tool images,
named by a hash of their contents, and their builds), `stream` (the attach stream, read with caps),
`pool` (containers started ahead of calls; owner labels), `warm_workers` (the host side of warm mode)
and `common` (errors and labels). Each tool gets an image `pocket-tool/<name>:<hash16>`, built once; builds
are not calls (see `images`).

Calls. A container starts with `/pocket/launch.sh` (POSIX sh) waiting on stdin. For a call the
runner writes a per-call nonce, the tool's environment as `export` lines, a sentinel line and the body; the launcher
`exec`s the tool's `entrypoint.run` with the body left on its stdin. Because nothing about a call is
known when the container starts, the runner keeps a small pool of them started per tool image and
limits, so a call skips the ~0.4 s container start. Each container serves exactly one call and is
removed after the result is returned.

Warm mode (opt-in per tool in settings, `sandbox.warm_tools`): for tools with an
`entrypoint.handler` (`module:function`), containers per tool and user (one more when all are busy)
run `/pocket/warm.py`, which imports the handler once and serves calls as JSON lines carrying the
request's id.

Hardening, always: uid 65534, all capabilities dropped, no-new-privileges, read-only root with a
small /tmp tmpfs (and a 16 MB tmpfs over each VOLUME the image declares, so no anonymous volume holds
the tool's files on the host's disk), pids/memory/CPU limits (the settings' values are ceilings a
manifest may only lower; `[sandbox.tools.NAME]` grants more), no network unless the manifest asks, no
logs kept by the engine, never a bind mount or the Docker socket. Tokens travel on the attach stream,
never in the container's config. stdout and stderr are read from the attach stream with byte caps, so the
runner's memory stays bounded (a call whose stdout was cut fails: cut JSON is no result; its value is the
cut text); a monotonic deadline kills the container. The launcher reports the
exit status on both streams after the tool ends (marked with a per-call nonce), so a call returns
without waiting for the engine to notice the exit.

Network: `false` is `--network none`; `true` is the default bridge; a list of hosts puts the
container on an internal network (no route out, and no address for the host on it) whose only exit is
a hardened proxy container (`egress_proxy.py`) allowing exactly those hosts at public addresses, given
to the tool as HTTP_PROXY/HTTPS_PROXY.

Background work (refilling pools, removing used containers) waits until no call is running, so it
does not take CPU from calls; a runner started later removes what a dead runner left (labels name
the host, pid and process start time of the runner that created each container and network).
`close()` kills the containers of calls still running first (they return "the sandbox was closed").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runner.errors import BuildError, PocketError, SandboxError
from runner.invocation import Cancellation, Invocation, Outcome, parse_output
from runner.manifest import Manifest
from runner.sandbox.common import (
    LABEL,
    LABEL_FOLDER,
    LABEL_MODE,
    LABEL_OWNER,
    LABEL_SANDBOX,
    LABEL_TOOL,
    USER,
)
from runner.sandbox.images import BUILD_STEP, FORMAT, _ImageBuilder, _package_file, image_repository
from runner.sandbox.limits import SENTINEL, Limits, launcher_lines, resolve_limits
from runner.sandbox.pool import QUIET_REMOVE, SETTLE_REMOVE, _owner_alive, _Pool, _Spec, _Started, owner_label
from runner.sandbox.stream import DRAIN_FACTOR, _Output, _Stream
from runner.sandbox.warm_workers import _WarmWorker
from runner.settings import SandboxSettings, Settings

__all__ = [
    "BUILD_STEP",
    "FORMAT",
    "LABEL",
    "LABEL_FOLDER",
    "LABEL_MODE",
    "LABEL_OWNER",
    "LABEL_SANDBOX",
    "LABEL_TOOL",
    "SENTINEL",
    "USER",
    "BuildError",
    "Limits",
    "Progress",
    "Sandbox",
    "SandboxError",
    "image_repository",
    "launcher_lines",
    "owner_label",
    "resolve_limits",
]

Progress = Callable[[str], None]

TMPFS = {"/tmp": "rw,nosuid,nodev,noexec,size=64m"}  # noqa: S108 - the container's own /tmp
# Over each VOLUME the image declares: without it the engine creates an anonymous volume there, writable
# host-disk storage that outlives the container.
VOLUME_TMPFS = "rw,nosuid,nodev,noexec,size=16m"
EGRESS_ALIAS = "pocket-egress"
EGRESS_PORT = 3128
OOM_EVENT_WAIT = 2.0  # how long a SIGKILLed container's OOM flag is awaited (the engine's event may lag the exit)


class Sandbox(_ImageBuilder):
    """Runs tools in containers. Thread-safe: `Pocket.ainvoke` calls `run` from worker threads.

    `run(manifest, body, environment, timeout=None, user_id="default", cancellation=None)` returns an
    `Invocation`;
    `prepare(manifest)` builds the image and fills the pool ahead of the first call; `close()`
    removes every container this sandbox created; `cleanup_stale()` removes containers left by
    runners that are gone (it runs once when the engine is first used).
    """

    def __init__(self, settings: Settings | SandboxSettings | None = None, *, progress: Progress | None = None):
        if isinstance(settings, Settings):
            settings = settings.sandbox
        self.settings: SandboxSettings = settings if settings is not None else SandboxSettings()
        self._progress = progress
        self._owner = owner_label()
        self.id = uuid.uuid4().hex[:12]
        self._stale_removed: list[str] = []
        self._egress: dict[tuple[str, ...], tuple[str, str]] = {}  # hosts -> (internal network id, proxy ip)
        self._lock = threading.RLock()
        self._api: Any = None
        self._images: dict[tuple[Any, ...], str] = {}  # (folder, file stats, base) -> tag
        self._build_locks: dict[str, threading.Lock] = {}
        self._superseded: dict[str, str] = {}  # image id -> name: images of edited tools still in use
        self._volumes: dict[str, dict[str, str]] = {}  # image -> tmpfs mounts over its VOLUMEs
        self._said: set[str] = set()  # progress messages said once (limits lowered to the ceilings)
        self._in_flight: set[str] = set()  # containers serving a call now: close() kills them first
        self._pools: dict[_Spec, _Pool] = {}
        self._warm: dict[tuple[_Spec, str], list[_WarmWorker]] = {}
        self._warm_busy: set[int] = set()
        self._warm_sweep: threading.Timer | None = None  # removes idle warm workers on time
        self._live: set[str] = set()  # every container id created and not yet removed
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pocket-sandbox")
        self._reaper = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pocket-reaper")
        self._closed = False
        self._active = 0  # calls running now
        self._last_call_end = 0.0
        self._quiet = threading.Condition()

    # -- engine ------------------------------------------------------------------------------------

    @property
    def api(self) -> Any:
        """The docker SDK's low-level client, created (and stale containers cleaned) on first use."""
        if self._api is None:
            with self._lock:
                if self._api is None:
                    import docker

                    try:
                        api = docker.APIClient(
                            base_url=os.environ.get("DOCKER_HOST") or None, version="auto", timeout=120,
                            max_pool_size=32,
                        )  # fmt: skip
                        api.ping()
                    except Exception as exc:
                        raise SandboxError(
                            f"cannot reach the Docker engine ({exc}); is dockerd running and may this user use it?"
                        ) from None
                    self._api = api
                    self._stale_removed = self._cleanup_stale(api)
        return self._api

    def cleanup_stale(self) -> list[str]:
        """Remove containers whose owner label names a runner process on this host that no longer runs.

        Runs once by itself when the engine is first used; returns every container id removed so far.
        """
        first_use = self._api is None
        api = self.api
        if not first_use:
            self._stale_removed += self._cleanup_stale(api)
        return list(self._stale_removed)

    def _cleanup_stale(self, api: Any) -> list[str]:
        removed = []
        with contextlib.suppress(Exception):
            for container in api.containers(all=True, filters={"label": LABEL_OWNER}):
                owner = (container.get("Labels") or {}).get(LABEL_OWNER, "")
                if owner and owner != self._owner and not _owner_alive(owner):
                    with contextlib.suppress(Exception):
                        api.remove_container(container["Id"], force=True, v=True)
                        removed.append(container["Id"])
            for network in api.networks(filters={"label": LABEL_OWNER}):
                owner = (network.get("Labels") or {}).get(LABEL_OWNER, "")
                if owner and owner != self._owner and not _owner_alive(owner):
                    with contextlib.suppress(Exception):
                        api.remove_network(network["Id"])
                        removed.append(network["Id"])
        return removed

    def _say(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)

    def _wait_quiet(self, limit: float, settle: float = 0.0) -> None:
        """Block until no call has run for `settle` seconds (or `limit` seconds passed, or the sandbox closes)."""
        deadline = time.monotonic() + limit
        with self._quiet:
            while not self._closed:
                now = time.monotonic()
                idle_for = now - self._last_call_end
                if not self._active and idle_for >= settle:
                    return
                left = deadline - now
                if left <= 0:
                    return
                self._quiet.wait(min(left, settle - idle_for) if not self._active else left)

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        with self._quiet:
            self._active += 1
        try:
            yield
        finally:
            with self._quiet:
                self._active -= 1
                self._last_call_end = time.monotonic()
                if not self._active:
                    self._quiet.notify_all()

    def _background(self, function: Callable[[], None]) -> None:
        if not self._closed:
            with contextlib.suppress(RuntimeError):  # shut down meanwhile
                self._executor.submit(function)

    # -- containers --------------------------------------------------------------------------------

    def _spec(self, manifest: Manifest, limits: Limits, mode: str) -> _Spec:
        image = self.image(manifest)
        if mode == "warm":
            command: tuple[str, ...] = ("python3", "/pocket/warm.py", manifest.entrypoint.handler or "")
        else:
            command = ("/bin/sh", "/pocket/launch.sh")
        limits_key = limits.container_key
        return _Spec(image, manifest.name, limits_key, command, mode)

    def _start(self, spec: _Spec) -> _Started:
        """Create, attach and start one container of `spec` (about 0.3-0.4 s)."""
        import docker.types

        memory_mb, cpus, pids, network = spec.limits_key
        api = self.api
        environment = {"HOME": "/tmp"}  # noqa: S108
        dns = None
        if isinstance(network, tuple):
            network_mode, proxy_ip = self._egress_network(network)
            proxy = f"http://{proxy_ip}:{EGRESS_PORT}"
            dns = ["timeout:1", "attempts:1"]  # names resolve at the proxy: a lookup in here fails in 1 s, not 10
            environment.update(HTTP_PROXY=proxy, HTTPS_PROXY=proxy, http_proxy=proxy, https_proxy=proxy)
        else:
            network_mode = "bridge" if network else "none"
        host_config = api.create_host_config(
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            tmpfs={**self._volume_tmpfs(spec.image), **TMPFS},
            pids_limit=pids,
            mem_limit=f"{memory_mb}m",
            memswap_limit=f"{memory_mb}m",
            nano_cpus=int(cpus * 1e9),
            network_mode=network_mode,
            dns_opt=dns,
            log_config=docker.types.LogConfig(type="none"),
            ipc_mode="private",
        )
        name = f"pocket-{image_repository(spec.tool).split('/', 1)[1][:40]}-{uuid.uuid4().hex[:10]}"
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
            labels={
                LABEL: "1",
                LABEL_OWNER: self._owner,
                LABEL_SANDBOX: self.id,
                LABEL_TOOL: spec.tool,
                LABEL_MODE: spec.mode,
            },
            host_config=host_config,
            name=name,
        )
        cid = container["Id"]
        with self._lock:
            self._live.add(cid)
        try:
            raw = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            stream = _Stream(raw)
            api.start(cid)
        except Exception:
            self._remove(cid)
            raise
        if self._closed:
            self._discard(_Started(cid, stream))
            raise SandboxError("the sandbox is closed")
        return _Started(cid, stream)

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

    def _egress_network(self, hosts: tuple[str, ...]) -> tuple[str, str]:
        """The internal network (no route out) whose only exit is a proxy allowing `hosts`; made once."""
        with self._lock:
            known = self._egress.get(hosts)
            if known is not None:
                return known
            api = self.api
            labels = {LABEL: "1", LABEL_OWNER: self._owner, LABEL_SANDBOX: self.id}
            suffix = hashlib.sha256("\n".join(hosts).encode()).hexdigest()[:8]
            # inhibit_ipv4: the host side of the bridge gets no address, so the host (and what listens on
            # it) is unreachable from this network too; only the proxy, a container on it, is there.
            network = api.create_network(
                f"pocket-egress-{self.id}-{suffix}", internal=True, labels=labels,
                options={"com.docker.network.bridge.inhibit_ipv4": "true"},
            )["Id"]  # fmt: skip
            try:
                subnet = api.inspect_network(network)["IPAM"]["Config"][0]["Subnet"]
                proxy = self._start_proxy(network, subnet, hosts, labels)
                networks = api.inspect_container(proxy)["NetworkSettings"]["Networks"]
                proxy_ip = next(n["IPAddress"] for n in networks.values() if n.get("NetworkID") == network)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    api.remove_network(network)
                raise SandboxError(f"cannot start the egress proxy for {', '.join(hosts)}: {exc}") from None
            self._egress[hosts] = (network, proxy_ip)
            return network, proxy_ip

    def _start_proxy(self, network: str, subnet: str, hosts: tuple[str, ...], labels: dict[str, str]) -> str:
        import docker.types

        api = self.api
        host_config = api.create_host_config(
            cap_drop=["ALL"], security_opt=["no-new-privileges"], read_only=True, pids_limit=256,
            tmpfs={**self._volume_tmpfs(self.settings.python_image), **TMPFS},
            mem_limit="64m", memswap_limit="64m", nano_cpus=500_000_000, network_mode="bridge",
            log_config=docker.types.LogConfig(type="none"),
        )  # fmt: skip
        source = _package_file("egress_proxy.py").decode()
        proxy = api.create_container(
            self.settings.python_image, command=["python3", "-c", source, str(EGRESS_PORT), subnet, *hosts],
            user=USER, labels={**labels, LABEL_MODE: "egress-proxy"}, host_config=host_config,
            name=f"pocket-egress-{self.id}-{uuid.uuid4().hex[:8]}",
        )["Id"]  # fmt: skip
        with self._lock:
            self._live.add(proxy)
        api.connect_container_to_network(proxy, network, aliases=[EGRESS_ALIAS])
        stream = _Stream(api.attach_socket(proxy, params={"stdout": 1, "stderr": 1, "stream": 1}))
        api.start(proxy)
        seen = bytearray()

        def ready(kind: int, payload: bytes) -> bool:
            seen.extend(payload)
            return b"ready" not in seen

        state = stream.read_until(time.monotonic() + 15, ready)
        stream.close()
        if state != "stop":
            raise SandboxError(f"the egress proxy did not start: {bytes(seen[-500:]).decode('utf-8', 'replace')}")
        return proxy

    def _discard(self, started: _Started) -> None:
        """Close the stream and remove the container, in the background."""
        started.stream.close()
        try:
            self._reaper.submit(self._remove_later, started.id)
        except RuntimeError:  # the reaper is shut down: remove now
            self._remove(started.id)

    def _remove_later(self, cid: str) -> None:
        self._wait_quiet(QUIET_REMOVE, SETTLE_REMOVE)
        self._remove(cid)

    def _remove(self, cid: str) -> None:
        with contextlib.suppress(Exception):
            self.api.remove_container(cid, force=True, v=True)
        with self._lock:
            self._live.discard(cid)

    def _pool(self, spec: _Spec) -> _Pool:
        stale: list[_Spec] = []
        with self._lock:
            pool = self._pools.get(spec)
            if pool is None:
                stale = [s for s in self._pools if s.tool == spec.tool and s.image != spec.image]
                pool = self._pools[spec] = _Pool(self, spec, self.settings.pool_size, self.settings.pool_max)
            old_pools = [self._pools.pop(s) for s in stale]
        for old in old_pools:  # the tool was edited: its old containers are of no use any more
            for started in old.close():
                self._discard(started)
        return pool

    def prepare(self, manifest: Manifest, *, user_id: str = "default", warm_workers: int = 0) -> str:
        """Build the tool's image and start its pool now, so the first call does not wait. Returns the tag.

        For a tool in warm mode, also make sure `warm_workers` warm containers serve `user_id` (waits for them).
        """
        limits = resolve_limits(self.settings, manifest)
        self._say_lowered(limits)
        spec = self._spec(manifest, limits, "call")
        if self.settings.pool_size:
            self._pool(spec).refill()
        if warm_workers and manifest.entrypoint.handler and self._is_warm(manifest.name):
            warm_spec = self._spec(manifest, limits, "warm")
            with self._lock:
                missing = warm_workers - len(self._warm.setdefault((warm_spec, user_id), []))
            workers = list(self._executor.map(lambda _: _WarmWorker(self._start(warm_spec)), range(max(missing, 0))))
            with self._lock:
                self._warm[(warm_spec, user_id)].extend(workers)
            self._schedule_warm_sweep()
        return spec.image

    def _schedule_warm_sweep(self) -> None:
        """Reap idle warm containers on time, not only when the next warm call comes: one timer per sandbox,
        set for the moment the least recently used idle worker reaches `warm_idle_seconds`."""
        with self._lock:
            if self._closed or self._warm_sweep is not None:
                return
            idle = [w.last_used for ws in self._warm.values() for w in ws if id(w) not in self._warm_busy]
            if not idle:
                return  # a busy worker schedules the sweep when its call ends
            delay = max(0.05, min(idle) + self.settings.warm_idle_seconds - time.monotonic())
            timer = self._warm_sweep = threading.Timer(delay, self._sweep_warm)
            timer.daemon = True
        timer.start()

    def _sweep_warm(self) -> None:
        with self._lock:
            self._warm_sweep = None
        self._reap_idle_warm()
        self._schedule_warm_sweep()

    def _reap_idle_warm(self) -> None:
        """Remove warm containers nobody used for `warm_idle_seconds`."""
        limit = time.monotonic() - self.settings.warm_idle_seconds
        idle: list[_WarmWorker] = []
        with self._lock:
            for workers in self._warm.values():
                for worker in [w for w in workers if w.last_used < limit and id(w) not in self._warm_busy]:
                    workers.remove(worker)
                    idle.append(worker)
        for worker in idle:
            self._discard(worker.started)

    def _is_warm(self, tool_name: str) -> bool:
        return tool_name in self.settings.warm_tools or "*" in self.settings.warm_tools

    # -- calls -------------------------------------------------------------------------------------

    def run(
        self,
        manifest: Manifest,
        body: Any,
        environment: Mapping[str, str],
        *,
        timeout: float | None = None,
        user_id: str = "default",
        cancellation: Cancellation | None = None,
    ) -> Invocation:
        """Run one call of `manifest`'s tool with `body` on stdin and exactly `environment` (plus HOME, PATH).
        `cancellation.cancel()`, from any thread, kills the call's container.

        Never raises for what the tool does: failures, timeouts, memory kills and build failures come
        back as an `Invocation` with outcome TOOL_FAILED; a manifest or environment the sandbox refuses
        comes back as BAD_INPUT.
        """
        started_at = time.perf_counter()
        name = manifest.name

        def failed(outcome: Outcome, error: str, **extra: Any) -> Invocation:
            return Invocation(name, outcome, error=error, duration_seconds=time.perf_counter() - started_at, **extra)

        if self._closed:
            return failed(Outcome.TOOL_FAILED, "the sandbox is closed")
        try:
            limits = resolve_limits(self.settings, manifest, timeout)
            nonce = uuid.uuid4().hex
            payload = launcher_lines(environment, nonce)
            stdin = payload + json.dumps(body).encode()
        except PocketError as exc:
            return failed(Outcome.BAD_INPUT, str(exc))
        self._say_lowered(limits)
        warm = self._is_warm(name)
        try:
            if warm and manifest.entrypoint.handler:
                result = self._run_warm(manifest, body, environment, limits, user_id, started_at, cancellation)
                return self._closed_result(result) if self._closed and not result.ok else result
            spec = self._spec(manifest, limits, "call")
            pool = self._pool(spec) if self.settings.pool_size else None
            started = pool.take() if pool is not None else self._start(spec)
        except SandboxError as exc:
            return failed(Outcome.TOOL_FAILED, str(exc))
        except Exception as exc:  # the engine refused (cpus over the host's, image gone, out of disk...)
            explanation = getattr(exc, "explanation", None) or exc
            return failed(Outcome.TOOL_FAILED, f"the sandbox could not start the tool's container: {explanation}")
        try:
            self._enter_call(started.id, cancellation)
            with self._running():
                result = self._call(name, started, stdin, nonce, limits, started_at)
        finally:
            with self._lock:
                self._in_flight.discard(started.id)
            if pool is not None:
                pool.release()
            self._discard(started)
        return self._closed_result(result) if self._closed and not result.ok else result

    def _enter_call(self, cid: str, cancellation: Cancellation | None = None) -> None:
        """Mark a container as serving a call, so close() (or the call's cancellation) kills it; killed now if
        either already happened."""
        with self._lock:
            self._in_flight.add(cid)
        if self._closed:
            self._kill(cid)
        if cancellation is not None:
            cancellation.attach(lambda: self._kill(cid))

    @staticmethod
    def _closed_result(result: Invocation) -> Invocation:
        """A call that close() interrupted: say so, not what killing its container looked like."""
        return Invocation(
            result.tool, Outcome.TOOL_FAILED, error="the sandbox was closed", stderr=result.stderr,
            duration_seconds=result.duration_seconds,
        )  # fmt: skip

    def _say_lowered(self, limits: Limits) -> None:
        for message in limits.lowered:
            with self._lock:
                if message in self._said:
                    continue
                self._said.add(message)
            self._say(message)

    def _call(
        self, name: str, started: _Started, stdin: bytes, nonce: str, limits: Limits, started_at: float
    ) -> Invocation:
        deadline = time.monotonic() + limits.timeout
        output = _Output(limits.output_limit, nonce)
        stream = started.stream
        state = "timeout"
        if stream.send(stdin, deadline, output.on_frame):
            stream.close_stdin()
            if not output.finished:
                state = stream.read_until(deadline, output.on_frame)
        if output.finished:
            state = "eof"
        elif state != "eof":
            stream.close()  # first: dockerd blocks a kill while a stream it copies to is not read
            self._kill(started.id)
        exit_code = output.exit_code
        if exit_code is None and state != "timeout":
            exit_code = self._exit_code(started.id)
        duration = time.perf_counter() - started_at
        truncated = output.dropped > 0
        stdout = bytes(output.stdout).decode("utf-8", "replace")
        stderr = output.stderr_text()
        common: dict[str, Any] = {"stderr": stderr, "duration_seconds": duration, "truncated": truncated}
        if state == "timeout":
            return Invocation(name, Outcome.TOOL_FAILED, error=f"timed out after {limits.timeout:g} s", **common)
        if state == "stop":
            return Invocation(
                name, Outcome.TOOL_FAILED, value=stdout, exit_code=exit_code,
                error=f"the tool printed more than {DRAIN_FACTOR + 1} times the output limit "
                f"({limits.output_limit} bytes) and was stopped",
                **common,
            )  # fmt: skip
        if exit_code == 0 and truncated:  # cut JSON is not a result: never hand it on as a success
            return Invocation(
                name, Outcome.TOOL_FAILED, value=stdout, exit_code=0,
                error=f"the tool's output was over the output limit ({limits.output_limit} bytes) and was cut; "
                f"raise [sandbox.tools.{name}] output_limit_bytes",
                **common,
            )  # fmt: skip
        if exit_code == 0:
            return Invocation(name, Outcome.OK, value=parse_output(stdout), exit_code=0, **common)
        if exit_code == 137 and not self._closed and self._oom_killed(started.id, wait=True):
            error = f"killed: out of memory (limit {limits.memory_mb} MiB)"
        elif exit_code is None:
            error = "the container vanished before its exit code could be read"
        else:
            tail = stderr.strip().splitlines()[-5:]
            error = f"the tool exited with code {exit_code}" + (": " + "\n".join(tail) if tail else "")
        return Invocation(name, Outcome.TOOL_FAILED, value=None, exit_code=exit_code, error=error, **common)

    def _kill(self, cid: str) -> None:
        with contextlib.suppress(Exception):
            self.api.kill(cid)

    def _exit_code(self, cid: str) -> int | None:
        try:
            return int(self.api.wait(cid, timeout=10)["StatusCode"])
        except Exception:
            return None

    def _oom_killed(self, cid: str, wait: bool = False) -> bool:
        """Whether the kernel killed a process of the container for memory. Asked after a 137 (SIGKILL) only;
        the engine learns of an OOM kill from its own event, which may come a little after the exit."""
        if wait:
            self._exit_code(cid)
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

    # -- warm mode ---------------------------------------------------------------------------------

    def _run_warm(
        self,
        manifest: Manifest,
        body: Any,
        environment: Mapping[str, str],
        limits: Limits,
        user_id: str,
        started_at: float,
        cancellation: Cancellation | None,
    ) -> Invocation:
        spec = self._spec(manifest, limits, "warm")
        key = (spec, user_id)
        worker = None
        self._reap_idle_warm()
        dead: list[_WarmWorker] = []
        with self._lock:
            for candidate in list(self._warm.setdefault(key, [])):
                if id(candidate) in self._warm_busy:
                    continue
                if not candidate.started.stream.alive():  # its container died between calls
                    self._warm[key].remove(candidate)
                    dead.append(candidate)
                    continue
                worker = candidate
                break
            if worker is not None:
                self._warm_busy.add(id(worker))
        for gone in dead:
            self._discard(gone.started)
        if worker is None:
            worker = _WarmWorker(self._start(spec))
            with self._lock:
                self._warm[key].append(worker)
                self._warm_busy.add(id(worker))
        try:
            self._enter_call(worker.started.id, cancellation)
            with self._running():
                state, value, stderr = worker.call(environment, body, limits)
        finally:
            worker.last_used = time.monotonic()
            with self._lock:
                self._in_flight.discard(worker.started.id)
                self._warm_busy.discard(id(worker))
                if worker.broken:
                    with contextlib.suppress(ValueError):
                        self._warm[key].remove(worker)
        if worker.broken:
            worker.started.stream.close()
            self._kill(worker.started.id)
            self._discard(worker.started)
        self._schedule_warm_sweep()
        duration = time.perf_counter() - started_at
        common: dict[str, Any] = {"stderr": stderr, "duration_seconds": duration}
        if state == "ok":
            return Invocation(manifest.name, Outcome.OK, value=value, **common)
        if state == "error":
            return Invocation(manifest.name, Outcome.TOOL_FAILED, error=str(value), **common)
        if state == "timeout":
            error = f"timed out after {limits.timeout:g} s"
            return Invocation(manifest.name, Outcome.TOOL_FAILED, error=error, **common)
        if state == "bad_reply":
            return Invocation(
                manifest.name, Outcome.TOOL_FAILED,
                error=f"the warm server's reply is not its protocol ({value!r}: did the handler write to the "
                "protocol's file descriptor?); its container was discarded",
                **common,
            )  # fmt: skip
        if state == "too_big":
            return Invocation(
                manifest.name, Outcome.TOOL_FAILED, truncated=True,
                error=f"the handler's result is over the output limit ({limits.output_limit} bytes)", **common,
            )  # fmt: skip
        code = self._exit_code(worker.started.id)
        if code == 137 and self._oom_killed(worker.started.id):
            return Invocation(
                manifest.name, Outcome.TOOL_FAILED, error=f"killed: out of memory (limit {limits.memory_mb} MiB)",
                **common,
            )  # fmt: skip
        return Invocation(manifest.name, Outcome.TOOL_FAILED, error=f"the warm server exited (code {code})", **common)

    # -- lifetime ----------------------------------------------------------------------------------

    def containers(self) -> set[str]:
        """Ids of the containers this sandbox created and has not removed yet."""
        with self._lock:
            return set(self._live)

    def close(self) -> None:
        """Remove every container this sandbox created (waiting for the removals) and stop its threads."""
        if self._closed:
            return
        self._closed = True
        with self._quiet:
            self._quiet.notify_all()
        with self._lock:
            in_flight = list(self._in_flight)
            pools, self._pools = list(self._pools.values()), {}
            if self._warm_sweep is not None:
                self._warm_sweep.cancel()
            warm = [w for workers in self._warm.values() for w in workers if id(w) not in self._warm_busy]
            self._warm = {}
        # Calls still running first: their containers are killed, so the calls end now (and report
        # "the sandbox was closed") instead of running to their timeout.
        for cid in in_flight:
            self._kill(cid)
        for pool in pools:
            for started in pool.close():
                started.stream.close()
        for worker in warm:  # a busy one's stream belongs to its call, which discards it
            worker.started.stream.close()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._reaper.shutdown(wait=True)
        if self._api is not None:
            for cid in self.containers():
                self._remove(cid)
            for image_id, name in list(self._superseded.items()):
                self._remove_image(image_id, name)
            for network, _proxy in self._egress.values():
                with contextlib.suppress(Exception):
                    self._api.remove_network(network)
            with contextlib.suppress(Exception):
                self._api.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
