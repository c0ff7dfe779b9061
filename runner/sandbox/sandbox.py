"""`Sandbox`: every tool call runs in its own hardened container. The facade over the parts in this package:
the engine (containers, hardening, stale cleanup; the seam a second backend implements), the image builder,
the started-container pools, the warm pool, background work, and the launcher exchange. It maps what those
report to an `Invocation`."""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from runner import telemetry
from runner.errors import PocketError, SandboxError
from runner.invocation import Cancellation, Invocation, NetworkAccess, NetworkReceipt, Outcome, parse_output
from runner.manifest import Manifest
from runner.sandbox.background import Background
from runner.sandbox.engine import DockerEngine, Engine, Spec, Started
from runner.sandbox.labels import owner_label
from runner.sandbox.launch import Ending, Launched, launch, python_command, stdin_for
from runner.sandbox.limits import Limits, check_environment, resolve_limits
from runner.sandbox.pool import Pools
from runner.sandbox.stream import DRAIN_FACTOR
from runner.sandbox.warm_pool import WarmPool, WarmReply, WarmState
from runner.settings import Backend, SandboxSettings, Settings

Progress = Callable[[str], None]
STDOUT_KEEP = 64 * 1024  # the stdout tail a failed call keeps


class Sandbox:
    """Runs tools in containers. Thread-safe: `Pocket.ainvoke` calls `run` from worker threads.

    `run(manifest, body, environment, ...)` returns an `Invocation`; `prepare(manifest)` builds the image and
    fills the pool ahead of the first call; `close()` removes every container this sandbox created;
    `cleanup_stale()` removes containers left by runners that are gone (it runs once when the engine is
    first used).
    """

    def __init__(
        self,
        settings: Settings | SandboxSettings | None = None,
        *,
        progress: Progress | None = None,
        provider_hosts: Callable[[str], tuple[str, ...]] | None = None,
    ):
        if isinstance(settings, Settings):
            settings = settings.sandbox
        self.settings: SandboxSettings = settings if settings is not None else SandboxSettings()
        self.id = uuid.uuid4().hex[:12]
        self._progress = progress
        self._provider_hosts = provider_hosts  # auth provider -> its API hosts (Pocket passes the catalog's)
        self._engine = _engine(self.settings, self.id, self._say)
        self._background = Background(self._engine)
        self._pools = Pools(self.settings.pool_size, self.settings.pool_max, self._engine, self._background)
        self._warm = WarmPool(self._engine, self._background, self.settings.warm_idle_seconds)
        self._lock = threading.Lock()
        self._said: set[str] = set()  # progress messages said once (limits lowered to the ceilings)
        self._in_flight: set[str] = set()  # containers serving a call now: close() kills them first
        self._tool_slots: dict[str, queue.SimpleQueue[None]] = {}
        self._resolved: dict[tuple[int, float | None], tuple[Manifest, Limits]] = {}
        self._closed = False

    @property
    def api(self) -> Any:
        """The docker SDK's low-level client (connected on first use)."""
        return self._engine.api

    def image(self, manifest: Manifest) -> str:
        """The tag of the tool's image, built first when no image holds exactly these contents."""
        return self._engine.image(manifest)

    def base_image(self, manifest: Manifest) -> str:
        """The image the tool's image is built on."""
        return self._engine.images.base_image(manifest)

    def cleanup_stale(self) -> list[str]:
        return self._engine.cleanup_stale()

    def containers(self) -> set[str]:
        """Ids of the containers this sandbox created and has not removed yet."""
        return self._engine.containers()

    # -- calls -------------------------------------------------------------------------------------

    def busy(self) -> contextlib.AbstractContextManager[None]:
        """Around a whole invocation, the caller's part after `run` included (its audit record, its span):
        pool refills and container removals wait until it ends, so they do not take the CPU from it."""
        return self._background.call()

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
        result = _Result(manifest.name, started_at)
        if self._closed:
            return result.failed("the sandbox is closed")
        try:
            limits = self._limits(manifest, timeout)
            check_environment(environment)
        except PocketError as exc:
            return result.failed(str(exc), Outcome.BAD_INPUT)
        self._say_lowered(limits)
        slots = self._slots(manifest.name, limits.max_concurrent)
        try:
            slots.get(timeout=limits.timeout)
        except queue.Empty:
            return result.failed(
                f"timed out after {limits.timeout:g} s waiting for a container: tool {manifest.name!r} runs at most "
                f"{limits.max_concurrent} at once (sandbox.max_concurrent, or [sandbox.tools.{manifest.name}])"
            )
        try:
            waited = time.perf_counter() - started_at
            return self._run(result, manifest, body, environment, limits.after(waited), user_id,
                             cancellation)  # fmt: skip
        finally:
            slots.put(None)

    def _run(
        self,
        result: _Result,
        manifest: Manifest,
        body: Any,
        environment: Mapping[str, str],
        limits: Limits,
        user_id: str,
        cancellation: Cancellation | None,
    ) -> Invocation:
        warm = bool(manifest.entrypoint.handler) and self._is_warm(manifest)
        try:
            spec = self._spec(manifest, limits, "warm" if warm else "call")  # a `pocket.image` span when it builds
            result.image = self._engine.images.image_id(spec.image)
            if warm:
                return self._unless_closed(
                    result, self._run_warm(result, spec, environment, body, limits, user_id, cancellation)
                )
            with telemetry.span("pocket.container.acquire", _acquiring(spec)) as current:
                pool = self._pools.get(spec, limits.max_concurrent) if self.settings.pool_size else None
                started = pool.take() if pool is not None else self._engine.start(spec)
                telemetry.annotate(current, {"container.id": started.id})
        except SandboxError as exc:
            return result.failed(str(exc))
        except Exception as exc:  # the engine refused (cpus over the host's, image gone, out of disk...) or is gone
            return result.failed(self._engine.failure(exc))
        try:
            try:
                with self._serving(started, cancellation), self._running(started, limits) as current:
                    launched = launch(self._engine, started, *stdin_for(environment, body), limits)
                    telemetry.annotate(current, {"process.exit.code": launched.exit_code})
            finally:  # the receipt is taken whatever happened, before the container's address can be another's
                result.network = self._receipt(limits, started)
                if pool is not None:
                    pool.release()
            return self._unless_closed(result, self._from_launch(result, launched, started, limits))
        finally:  # once the outcome is read: an OOM kill is asked of the container, which the engine may flag late
            self._background.discard(started)

    def _run_warm(
        self,
        result: _Result,
        spec: Spec,
        environment: Mapping[str, str],
        body: Any,
        limits: Limits,
        user_id: str,
        cancellation: Cancellation | None,
    ) -> Invocation:
        with telemetry.span("pocket.container.acquire", _acquiring(spec)) as current:
            worker = self._warm.acquire(spec, user_id)
            telemetry.annotate(current, {"container.id": worker.started.id})
        try:
            try:
                with self._serving(worker.started, cancellation), self._running(worker.started, limits):
                    reply = worker.call(environment, body, limits)
            finally:
                result.network = self._receipt(limits, worker.started)
            return self._from_warm(result, reply, worker.started, limits)
        finally:  # once the outcome is read: a dead server's container (its exit code, its OOM flag) goes after
            self._warm.release(worker)

    def _running(self, started: Started, limits: Limits) -> contextlib.AbstractContextManager[Any]:
        return telemetry.span(
            "pocket.container.run",
            {"container.id": started.id, "container.runtime": self.settings.runtime.value,
             "pocket.timeout_seconds": limits.timeout},
        )  # fmt: skip

    def _receipt(self, limits: Limits, started: Started) -> NetworkReceipt | None:
        """Where the call connected: from its egress proxy for a host list; None when nobody can tell."""
        if not limits.network:
            return NetworkReceipt(NetworkAccess.NONE)
        if not isinstance(limits.network, tuple):
            return NetworkReceipt(NetworkAccess.OPEN)
        try:
            return self._engine.receipt(limits.network, started)
        except SandboxError as exc:
            self._say(str(exc))
            return None

    def _unless_closed(self, result: _Result, outcome: Invocation) -> Invocation:
        """A call that close() interrupted: say so, not what killing its container looked like."""
        if self._closed and not outcome.ok:
            return result.failed("the sandbox was closed", stderr=outcome.stderr)
        return outcome

    def _limits(self, manifest: Manifest, timeout: float | None = None) -> Limits:
        """The call's limits, resolved once per manifest and timeout (settings and catalog do not change)."""
        key = (id(manifest), timeout)
        known = self._resolved.get(key)
        if known is not None and known[0] is manifest:  # held in the entry, so its id is not another's
            return known[1]
        provider = manifest.auth.provider if manifest.auth else None
        hosts = self._provider_hosts(provider) if provider and self._provider_hosts else ()
        limits = resolve_limits(self.settings, manifest, timeout, hosts)
        with self._lock:
            if len(self._resolved) >= 1024:
                self._resolved.clear()
            self._resolved[key] = (manifest, limits)
        return limits

    def _spec(self, manifest: Manifest, limits: Limits, mode: str) -> Spec:
        prestarted = None
        if mode == "warm":
            command: tuple[str, ...] = ("python3", "/pocket/warm.py", manifest.entrypoint.handler or "")
        else:
            prestarted = python_command(manifest.entrypoint.run) if self.settings.prestart_python else None
            command = prestarted or ("/bin/sh", "/pocket/launch.sh")
        channel = mode == "warm" or prestarted is not None  # launch.sh, a shell script, cannot connect to one
        return Spec(self._engine.image(manifest), manifest.name, limits.container_key, command, mode, channel)

    @contextlib.contextmanager
    def _serving(self, started: Started, cancellation: Cancellation | None) -> Iterator[None]:
        """Around a call: close() (or the call's cancellation) kills its container, at once if either happened
        already; background work waits."""
        cid = started.id
        with self._lock:
            self._in_flight.add(cid)
        try:
            if self._closed:
                self._engine.kill(cid)
            if cancellation is not None:
                cancellation.attach(lambda: self._engine.kill(cid))
            with self._background.call():
                yield
        finally:
            with self._lock:
                self._in_flight.discard(cid)

    def _from_launch(self, result: _Result, launched: Launched, started: Started, limits: Limits) -> Invocation:
        common: dict[str, Any] = {"stderr": launched.stderr, "truncated": launched.truncated}
        code, stdout = launched.exit_code, launched.stdout
        if launched.ending is Ending.TIMEOUT:
            return result.failed(_timed_out(limits), stdout=stdout[-STDOUT_KEEP:], **common)
        if launched.ending is Ending.STOPPED:
            return result.failed(
                f"the tool printed more than {DRAIN_FACTOR + 1} times the output limit "
                f"({limits.output_limit} bytes) and was stopped",
                value=stdout, exit_code=code, **common,
            )  # fmt: skip
        if code == 0 and launched.truncated:  # cut JSON is not a result: never hand it on as a success
            return result.failed(
                f"the tool's output was over the output limit ({limits.output_limit} bytes) and was cut; "
                f"raise [sandbox.tools.{result.tool}] output_limit_bytes",
                value=stdout, exit_code=0, **common,
            )  # fmt: skip
        if code == 0:
            return result.ok(parse_output(stdout), exit_code=0, **common)
        died = None if launched.reported else self._engine.why_died(code, limits)
        if code == 137 and not self._closed and self._engine.oom_killed(started.id, wait=True):
            error = _out_of_memory(limits)
        elif died:
            error = died
        elif code is None:
            error = "the container vanished before its exit code could be read"
        else:
            tail = launched.stderr.strip().splitlines()[-5:]
            error = f"the tool exited with code {code}" + (": " + "\n".join(tail) if tail else "")
            error += _offline_hint(launched.stderr + "\n" + stdout, result.tool, limits)
        return result.failed(error, value=None, exit_code=code, stdout=stdout[-STDOUT_KEEP:], **common)

    def _from_warm(self, result: _Result, reply: WarmReply, started: Started, limits: Limits) -> Invocation:
        stderr = reply.stderr
        if reply.state is WarmState.OK:
            return result.ok(reply.value, stderr=stderr)
        if reply.state is WarmState.ERROR:
            return result.failed(str(reply.value), stderr=stderr)
        if reply.state is WarmState.TIMEOUT:
            return result.failed(_timed_out(limits), stderr=stderr)
        if reply.state is WarmState.BAD_REPLY:
            return result.failed(
                f"the warm server's reply is not its protocol ({reply.value!r}: did the handler write to the "
                "protocol's file descriptor?); its container was discarded",
                stderr=stderr,
            )
        if reply.state is WarmState.TOO_BIG:
            error = f"the handler's result is over the output limit ({limits.output_limit} bytes)"
            return result.failed(error, stderr=stderr, truncated=True)
        code = self._engine.exit_code(started.id)
        if code == 137 and self._engine.oom_killed(started.id):
            return result.failed(_out_of_memory(limits), stderr=stderr)
        return result.failed(f"the warm server exited (code {code})", stderr=stderr)

    def _say(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)

    def _say_lowered(self, limits: Limits) -> None:
        for message in limits.lowered:
            with self._lock:
                if message in self._said:
                    continue
                self._said.add(message)
            self._say(message)

    def _slots(self, tool: str, count: int) -> queue.SimpleQueue[None]:
        """The calls of one tool that may have a container at once, as tokens in a queue: a call takes one and puts
        it back, the others wait for one (a semaphore whose wait and post are single calls into C)."""
        slots = self._tool_slots.get(tool)  # no lock on a call's path once it exists
        if slots is None:
            with self._lock:
                slots = self._tool_slots.get(tool)
                if slots is None:
                    slots = self._tool_slots[tool] = queue.SimpleQueue()
                    for _ in range(count):
                        slots.put(None)
        return slots

    def _is_warm(self, manifest: Manifest) -> bool:
        return manifest.name in self.settings.warm_tools or "*" in self.settings.warm_tools

    # -- ahead of calls, and lifetime --------------------------------------------------------------

    def prepare(self, manifest: Manifest, *, user_id: str = "default", warm_workers: int = 0) -> str:
        """Build the tool's image and start its pool now, so the first call does not wait. Returns the tag.

        For a tool in warm mode, also make sure `warm_workers` warm containers serve `user_id` (waits for them).
        """
        limits = self._limits(manifest)
        self._say_lowered(limits)
        spec = self._spec(manifest, limits, "call")
        if self.settings.pool_size:
            self._pools.get(spec, limits.max_concurrent).refill()
        if warm_workers and manifest.entrypoint.handler and self._is_warm(manifest):
            self._warm.fill(self._spec(manifest, limits, "warm"), user_id, warm_workers)
        return spec.image

    def close(self) -> None:
        """Remove every container this sandbox created (waiting for the removals) and stop its threads.

        The containers of calls still running are killed first, so those calls end now (and report "the
        sandbox was closed") instead of running to their timeout."""
        if self._closed:
            return
        self._closed = True
        self._background.stop_waiting()
        with self._lock:
            in_flight = list(self._in_flight)
        for cid in in_flight:
            self._engine.kill(cid)
        self._pools.close()
        self._warm.close()
        self._background.close()
        self._engine.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _acquiring(spec: Spec) -> dict[str, str]:
    return {"pocket.container.mode": spec.mode, "container.image.name": spec.image}


def _engine(settings: SandboxSettings, sandbox_id: str, say: Progress) -> Engine:
    """The engine of `sandbox.backend`: the Kubernetes one is imported only when chosen."""
    if settings.backend is Backend.KUBERNETES:
        from runner.sandbox.kubernetes_engine import KubernetesEngine

        return KubernetesEngine(settings, sandbox_id, owner_label(), say)
    return DockerEngine(settings, sandbox_id, owner_label(), say)


class _Result:
    """Builds the `Invocation` of one call, timed from its start, with its image and network receipt once known."""

    def __init__(self, tool: str, started_at: float):
        self.tool, self._started_at = tool, started_at
        self.image: str | None = None
        self.network: NetworkReceipt | None = None

    def ok(self, value: Any, **details: Any) -> Invocation:
        return self._invocation(Outcome.OK, value=value, **details)

    def failed(self, error: str, outcome: Outcome = Outcome.TOOL_FAILED, **details: Any) -> Invocation:
        return self._invocation(outcome, error=error, **details)

    def _invocation(self, outcome: Outcome, **details: Any) -> Invocation:
        return Invocation(
            self.tool, outcome, duration_seconds=self._elapsed(), image=self.image, network=self.network, **details
        )

    def _elapsed(self) -> float:
        return time.perf_counter() - self._started_at


# How a failed name lookup reads in the runtimes tools use: glibc, Python, Node, Go, curl.
_NO_NAME_RESOLUTION = re.compile(
    r"Temporary failure in name resolution|Name or service not known|No address associated with hostname|"
    r"getaddrinfo (ENOTFOUND|EAI_AGAIN)|dial tcp: lookup .*(no such host|server misbehaving)|Could not resolve host"
)


def _offline_hint(output: str, tool: str, limits: Limits) -> str:
    """After a tool that failed looking up a host name, what grants it network (or why it had none)."""
    if not _NO_NAME_RESOLUTION.search(output):
        return ""
    if isinstance(limits.network, tuple):
        return (
            f"\n(the tool could not resolve a host name: it may reach only {', '.join(limits.network)}, and only "
            "through the proxy it is given as HTTPS_PROXY / HTTP_PROXY)"
        )
    if limits.network:
        return ""
    return (
        f"\n(the tool could not resolve a host name: it has no network. Grant it the hosts it needs with "
        f'[sandbox.tools.{tool}] network = ["api.example.com"] in settings, or "sandbox": {{"network": [...]}} '
        "in its pocket.json)"
    )


def _timed_out(limits: Limits) -> str:
    return f"timed out after {limits.timeout:g} s"


def _out_of_memory(limits: Limits) -> str:
    return f"killed: out of memory (limit {limits.memory_mb} MiB)"
