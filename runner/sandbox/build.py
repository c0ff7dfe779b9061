"""One image build, on the engine's classic builder, followed line by line.

Builds are not calls. `entrypoint.build` runs as root in the classic builder's container, with Docker's
default capabilities and seccomp profile: it is code trusted at install time. What the builder offers
is applied: no network when `sandbox.allow_network` is false, memory (no swap) capped at
`sandbox.build_memory_mb`, and a deadline, `sandbox.build_timeout_seconds`, apart from the call's timeout,
at which the build step's container is killed, so the build fails in the engine and leaves no container.
Otherwise builds get the default bridge network, to reach package indexes. `sandbox.pip_index_url` reaches
the build step only, as a predefined proxy build argument (INDEX_ARG), which the classic builder keeps out
of the image's history and config; it is redacted from build errors and progress.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from runner.errors import BuildError
from runner.manifest import Manifest
from runner.redaction import REDACTED, Redactor
from runner.sandbox.context import BUILD_STEP, DEPS_STEP, INDEX_ARG, Context
from runner.settings import SandboxSettings

if TYPE_CHECKING:
    from runner.sandbox.engine import DockerEngine

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The classic builder announces a step's container like this, after the step's line and before its output.
_RUNNING_IN = re.compile(r"^ ---> Running in ([0-9a-f]{12,64})$")
KILL_AGAIN = 0.2  # seconds between the kills of a build step over its deadline


def _index_redactor(url: str) -> Redactor:
    """Hides `url` (a package index, maybe with user:password) and its credentials in build output.

    The URL is named by its setting wherever it appears, also as pip prints it (`https://user:****@host/simple`:
    its host and path); a password is redacted wherever it appears.
    """
    if not url:
        return Redactor()
    from urllib.parse import unquote, urlsplit

    label = "[sandbox.pip_index_url]"
    pairs = {url: label, url.rstrip("/"): label}
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        location = parts.netloc.rpartition("@")[2] + parts.path
        if location:
            pairs[location] = label
            pairs[location.rstrip("/")] = label
        if parts.password:
            pairs[parts.password] = REDACTED
            pairs[unquote(parts.password)] = REDACTED
    return Redactor.labelled({secret: label for secret, label in pairs.items() if len(secret) >= 3})


class _BuildWatch:
    """Stops a build at its deadline by killing the container running its current step (`entrypoint.build`, or
    the step installing its dependencies ahead).

    The classic builder then fails the build and removes that container, and the blocked read of its
    progress returns. (Closing the build's response would cancel it too, but the docker SDK keeps the
    response inside its generator.) A step's container is the one announced right after the step's line, before
    any output of the step itself, which may print anything; the steps are expected in their order.
    """

    def __init__(self, kill: Callable[[str], None], steps: tuple[str, ...] = (BUILD_STEP,)):
        self._kill = kill
        self._steps = list(steps)
        self._at_step = False
        self.container: str | None = None  # the build step's, once it started
        self._running: str | None = None  # the current step's
        self.expired = threading.Event()
        self.ended = threading.Event()  # the build is over: stop killing

    def saw(self, line: str) -> bool:
        """Follow the builder's progress, one line at a time; True at the line naming a step's container."""
        if not self._steps:
            return False
        match = _RUNNING_IN.match(line)
        if self._at_step and match:
            self._running = match.group(1)
            if self._steps.pop(0) == BUILD_STEP:
                self.container = self._running
            if self.expired.is_set():
                self._kill(self._running)
            self._at_step = False
            return True
        self._at_step = False
        for index, step in enumerate(self._steps):  # an earlier step may have come from the builder's cache
            if line.startswith("Step ") and line.endswith(f" : {step}"):
                del self._steps[:index]
                self._at_step = True
                break
        return False

    def expire(self) -> None:
        """At the deadline: kill the current step's container, again every KILL_AGAIN seconds until the build
        ends, since a kill between the container's creation (when the builder names it) and its start is lost."""
        self.expired.set()
        while not self.ended.is_set():
            if self._running is not None:
                self._kill(self._running)
            self.ended.wait(KILL_AGAIN)


class Build:
    """Builds tool images on one engine, with the settings' limits."""

    def __init__(
        self, engine: DockerEngine, settings: SandboxSettings, say: Callable[[str], None], exists: Callable[[str], bool]
    ):
        self._engine, self.settings = engine, settings
        self._say, self._exists = say, exists

    def run(self, manifest: Manifest, context: Context, tag: str) -> None:
        """Build `context` as `tag`; raises BuildError with the log's tail (redacted) when it fails."""
        limit = self.settings.build_timeout_seconds
        self._say(f"building image {tag} for tool {manifest.name!r} (up to sandbox.build_timeout_seconds = {limit:g})")
        tail: deque[str] = deque(maxlen=40)
        index_url = self.settings.pip_index_url.get_secret_value() if self.settings.pip_index_url else ""
        redact = _index_redactor(index_url)
        watch = _BuildWatch(self._engine.kill, (DEPS_STEP, BUILD_STEP) if context.dependencies else (BUILD_STEP,))
        timer = threading.Timer(limit, watch.expire)
        timer.daemon = True
        failure: dict[str, Any] | None = None
        context_file = None
        try:
            context_file = context.tar(manifest)
            timer.start()
            stream = self._engine.api.build(
                fileobj=context_file,
                custom_context=True,
                tag=tag,
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
                **self._isolation(index_url),
            )
            failure = self._follow(manifest.name, stream, watch, tail, redact)
        except Exception as exc:
            failure = {"error": str(exc)}
        finally:
            timer.cancel()
            watch.ended.set()
            if context_file is not None:
                context_file.close()
        if failure is None and self._exists(tag):
            self._say(f"built {tag}")
            return
        log = "\n".join(tail)
        raise BuildError(f"{self._failure(manifest, failure, watch, redact)}\n--- build log (tail) ---\n{log}")

    def _follow(
        self,
        name: str,
        stream: Iterator[dict[str, Any]],
        watch: _BuildWatch,
        tail: deque[str],
        redact: Redactor,
    ) -> dict[str, Any] | None:
        """Show the build's output as it comes (redacted) and keep its tail; returns the engine's error, if any."""
        for chunk in stream:
            if "error" in chunk:
                return chunk
            for line in _ANSI.sub("", str(chunk.get("stream", ""))).splitlines():
                if not line.strip():
                    continue
                step_started = watch.saw(line)
                line = redact(line)
                self._say(f"build {name}: {line}")
                if step_started:
                    tail.clear()  # the log kept from here on is the step's own output
                else:
                    tail.append(line)
        return None

    def _isolation(self, index_url: str) -> dict[str, Any]:
        """The build step's limits: no network when tools may have none, capped memory, the index URL kept out of
        the image (see INDEX_ARG). It still runs as root with Docker's default capabilities: the classic builder
        offers nothing else."""
        memory = self.settings.build_memory_mb * 1024 * 1024
        return {
            "buildargs": {INDEX_ARG: index_url} if index_url else {},
            "network_mode": None if self.settings.allow_network else "none",
            "container_limits": {"memory": memory, "memswap": memory},
        }

    def _failure(self, manifest: Manifest, failure: dict[str, Any] | None, watch: _BuildWatch, redact: Redactor) -> str:
        """Why a build failed, in the tool's terms: its command and exit code, not the builder's RUN line."""
        what = f"building the image of tool {manifest.name!r}"
        if watch.expired.is_set():
            limit = self.settings.build_timeout_seconds
            return (
                f"{what} took longer than sandbox.build_timeout_seconds ({limit:g} s) and was stopped; "
                "raise that setting if the build needs more time"
            )
        failure = failure or {"error": "the image is missing after the build"}
        code = (failure.get("errorDetail") or {}).get("code")
        if code is None or watch.container is None:  # not the build step: the engine's own words
            return f"{what} failed: {redact(failure.get('error') or 'unknown error')}"
        command = redact(manifest.entrypoint.build or "")
        message = f"{what} failed: entrypoint.build ({command!r}) exited with code {code}"
        if code == 137:
            memory = self.settings.build_memory_mb
            message += f" (killed: out of memory? a build may use sandbox.build_memory_mb = {memory})"
        if not self.settings.allow_network:
            message += "; builds get no network while sandbox.allow_network = false, so one fetching packages fails"
        return message
