"""The sandbox: every tool call runs in its own hardened Docker container, through the docker SDK.

Images. Each tool gets an image `pocket-tool/<name>:<hash16>`: its base image, the tool's files in
/tool, its `entrypoint.build` run once, and our launcher in /pocket. The tag is a hash of everything
that goes in (base image id, tool files, launcher), so an edited tool is rebuilt and an unchanged one
never is; the images its earlier versions built (same tool, same folder) are then removed. Builds reach
package indexes through the host's CA bundle (or `sandbox.ca_bundle`) and `sandbox.pip_index_url`, given
to the build step only: as a predefined proxy build argument (INDEX_ARG), which the classic builder keeps
out of the image's history and config, moved into PIP_INDEX_URL by the build script; it is redacted from
build errors and progress. The context is only regular files, directories and symlinks (a FIFO would
block), at most `sandbox.max_context_mb`, and is streamed from a temporary file. A folder with only a
pocket.json whose entrypoint names files is refused before any build.

Builds are not calls. `entrypoint.build` runs as root in the classic builder's container, with Docker's
default capabilities and seccomp profile: it is code trusted at install time. What the builder offers
is applied: no network when `sandbox.allow_network` is false, memory (no swap) capped at
`sandbox.build_memory_mb`, and a deadline, `sandbox.build_timeout_seconds`, apart from the call's timeout,
at which the build step's container is killed, so the build fails in the engine and leaves no container.
Otherwise builds get the default bridge network, to reach package indexes.

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
import io
import json
import os
import re
import select
import shlex
import socket
import ssl
import stat
import struct
import tarfile
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from runner.errors import PocketError, ToolFailedError
from runner.invocation import Cancellation, Invocation, Outcome, parse_output
from runner.manifest import RESERVED_PREFIX, RESERVED_VARIABLES, Manifest
from runner.settings import SandboxSettings, Settings, ToolLimits

Progress = Callable[[str], None]

FORMAT = "pocket-runner-image-v1"  # bump to rebuild every tool image after a change to the image layout
LABEL = "pocket-runner"  # every container and image we create carries `pocket-runner=1`
LABEL_OWNER = "pocket-runner.owner"  # hostname:pid:process-start-ticks of the runner that created it
LABEL_SANDBOX = "pocket-runner.sandbox"  # which Sandbox object (one process may hold several)
LABEL_TOOL = "pocket-runner.tool"
LABEL_FOLDER = "pocket-runner.folder"  # on images: a hash of the tool folder's path, so rebuilds replace their own
LABEL_MODE = "pocket-runner.mode"
SENTINEL = "__pocket_body_follows__"
USER = "65534:65534"  # nobody:nogroup
TMPFS = {"/tmp": "rw,nosuid,nodev,noexec,size=64m"}  # noqa: S108 - the container's own /tmp
# Over each VOLUME the image declares: without it the engine creates an anonymous volume there, writable
# host-disk storage that outlives the container.
VOLUME_TMPFS = "rw,nosuid,nodev,noexec,size=16m"
STDERR_KEEP = 64 * 1024  # the stderr tail kept per call
# Background work (refilling pools, removing used containers) waits until no call is running, so it
# never takes CPU from a call, for at most this long (then it runs anyway: a busy runner still refills).
QUIET_START = 0.5
QUIET_REMOVE = 5.0
SETTLE_REMOVE = 0.1  # removals also wait for a pause of this long between calls
DRAIN_FACTOR = 16  # output past the cap is read and dropped up to this many caps, then the tool is killed
EGRESS_ALIAS = "pocket-egress"
EGRESS_PORT = 3128
EXCLUDED = {".git", "__pycache__", ".venv", "venv", "node_modules", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# sandbox.pip_index_url reaches the build step as this predefined proxy build argument: the classic builder
# passes those to RUN without an ARG line and, unlike any ARG, keeps them out of the image's history.
INDEX_ARG = "FTP_PROXY"
BUILD_STEP = "RUN /bin/sh /pocket-build/build.sh && rm -rf /pocket-build"  # runs entrypoint.build
# The classic builder announces a step's container like this, after the step's line and before its output.
_RUNNING_IN = re.compile(r"^ ---> Running in ([0-9a-f]{12,64})$")


class SandboxError(ToolFailedError):
    """The sandbox could not run the tool: no Docker engine, a missing base image, a failed build."""


class BuildError(SandboxError):
    """A tool image failed to build; the message carries the tail of the build log."""


# --------------------------------------------------------------------------------------------------
# Limits


@dataclass(frozen=True)
class Limits:
    """What one call's container may use, after settings, manifest and call options are combined."""

    timeout: float
    memory_mb: int
    cpus: float
    pids: int
    output_limit: int
    network: bool | tuple[str, ...]  # a tuple: only these hosts, through the egress proxy
    # What the manifest asked for above the settings' ceilings, said once through progress
    lowered: tuple[str, ...] = field(default=(), compare=False)

    @property
    def container_key(self) -> tuple[Any, ...]:
        """The limits that are fixed when a container is created (pools are keyed by them)."""
        return (self.memory_mb, self.cpus, self.pids, self.network)


_LIMIT_UNITS = {"timeout_seconds": "s", "memory_mb": "MiB", "cpus": "CPUs", "pids": "processes",
                "output_limit_bytes": "bytes"}  # fmt: skip


def resolve_limits(settings: SandboxSettings, manifest: Manifest, timeout: float | None = None) -> Limits:
    """`[sandbox.tools.NAME]` in settings wins as it is; otherwise the manifest's `sandbox` block may ask for
    less than the settings' values, which are both the defaults and the ceilings. A call's timeout is
    capped by the resulting timeout.

    A manifest that asks for network access is refused when `sandbox.allow_network` is false or the
    tool's settings say `network = false`. A list of hosts means only those hosts, through the egress
    proxy (HTTP and HTTPS via HTTP_PROXY/HTTPS_PROXY).
    """
    spec = manifest.sandbox
    override = settings.tools.get(manifest.name) or settings.tools.get(manifest.name.lower()) or ToolLimits()
    wants_network = bool(spec.network)
    if wants_network and (not settings.allow_network or override.network is False):
        where = "sandbox.allow_network = false" if not settings.allow_network else f"sandbox.tools.{manifest.name}"
        raise PocketError(f"tool {manifest.name!r} asks for network access and settings forbid it ({where})")
    lowered: list[str] = []

    def pick(name: str) -> Any:
        granted = getattr(override, name)
        if granted is not None:
            return granted
        ceiling, asked = getattr(settings, name), getattr(spec, name)
        if asked is None or asked <= ceiling:
            return asked if asked is not None else ceiling
        lowered.append(
            f"tool {manifest.name!r} asks for {asked:g} {_LIMIT_UNITS[name]}; limited to {ceiling:g} by "
            f"sandbox.{name} (raise it in [sandbox.tools.{manifest.name}])"
        )
        return ceiling

    limit = float(pick("timeout_seconds"))
    return Limits(
        timeout=min(float(timeout), limit) if timeout else limit,
        memory_mb=pick("memory_mb"),
        cpus=pick("cpus"),
        pids=pick("pids"),
        output_limit=pick("output_limit_bytes"),
        network=spec.network if isinstance(spec.network, tuple) else wants_network,
        lowered=tuple(lowered),
    )


def launcher_lines(environment: Mapping[str, str], nonce: str = "") -> bytes:
    """The nonce, the `export` lines and the sentinel the launcher reads before running the tool.

    Names must be shell identifiers; values may hold anything but NUL and newlines (the launcher reads
    one line per variable). Errors name the variable, never its value.
    """
    lines = [f"pocket_nonce={nonce}\n"] if nonce else []
    for name, value in environment.items():
        if not _ENV_NAME.match(name) or name.startswith(RESERVED_PREFIX):
            raise PocketError(f"variable name {name!r} is not a valid environment variable name")
        if name in RESERVED_VARIABLES:
            raise PocketError(f"variable {name!r} is reserved for the sandbox")
        value = str(value)
        if "\n" in value or "\r" in value or "\0" in value:
            raise PocketError(f"variable {name!r} contains a newline or NUL byte, which the sandbox cannot pass")
        lines.append(f"export {name}={shlex.quote(value)}\n")
    lines.append(SENTINEL + "\n")
    return "".join(lines).encode()


# --------------------------------------------------------------------------------------------------
# Images


def _package_file(name: str) -> bytes:
    return resources.files("runner").joinpath(name).read_bytes()


def _tool_files(folder: Path) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every regular file and symlink of the tool, minus caches and VCS data.

    FIFOs, sockets and devices are skipped: reading a FIFO would block the build forever.
    """
    found: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED and not os.path.islink(os.path.join(root, d)))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = Path(root, name)
            try:
                mode = path.lstat().st_mode
            except OSError:
                continue  # removed meanwhile
            if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                found.append((path.relative_to(folder).as_posix(), path))
        for name in sorted(os.listdir(root)):  # symlinked directories: kept as links, never followed
            path = Path(root, name)
            if name not in EXCLUDED and path.is_symlink() and path.is_dir():
                found.append((path.relative_to(folder).as_posix(), path))
    return sorted(found)


_FILE_ARGUMENT = re.compile(r"^(\.|\./.*|[\w.-][\w./-]*\.(py|js|mjs|cjs|ts|sh|txt|toml|cfg|json|lock|rb|go|jar))$")
_PROJECT_TOOLS = {"npm": "package.json", "yarn": "package.json", "pnpm": "package.json", "poetry": "pyproject.toml"}


def _missing_code(manifest: Manifest, files: list[str]) -> str | None:
    """What the entrypoint needs that a folder holding only pocket.json lacks (hyperpocket's corpus ships
    manifests without code), or None. Cheap, so a hopeless build is never started."""
    if any(rel != "pocket.json" for rel in files):
        return None
    entrypoint = manifest.entrypoint
    for where, command in (("entrypoint.build", entrypoint.build), ("entrypoint.run", entrypoint.run)):
        if not command:
            continue
        try:
            words = shlex.split(command)
        except ValueError:
            words = command.split()
        needed = None
        for before, word in zip(["", *words], words, strict=False):
            if before in ("-c", "-e", "--eval", "-m"):
                continue  # inline code or a module: not a file of the folder
            if word in _PROJECT_TOOLS and before in ("", "&&", ";", "|"):
                needed = _PROJECT_TOOLS[word]
            elif word == "sync" and before == "uv":
                needed = "pyproject.toml"
            elif word == "." or (_FILE_ARGUMENT.match(word) and not (manifest.folder / word).exists()):
                needed = "its code (a pyproject.toml or setup.py)" if word == "." else word
            if needed:
                return (
                    f"{where} ({command!r}) needs {needed}, which is not in {manifest.folder}; "
                    "put the tool's code next to its pocket.json"
                )
    return None


def _default_ca_bundle() -> Path | None:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _folder_key(folder: Path) -> str:
    return hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]


def image_repository(tool_name: str) -> str:
    """A Docker repository name for a tool: lower case, [a-z0-9] separated by single `-`."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", tool_name.lower()).strip("-") or "tool"
    return f"pocket-tool/{cleaned[:100]}"


@dataclass
class _Context:
    """The build context of one tool image and the hash that names it."""

    digest: str
    files: list[tuple[str, Path]]
    dockerfile: str
    build_script: bytes | None
    ca_bundle: bytes | None


def _dockerfile(base_id: str, has_build: bool) -> str:
    lines = [
        f"FROM {base_id}",
        "COPY pocket/ /pocket/",
        "COPY tool/ /tool/",
        "WORKDIR /tool",
    ]
    if has_build:
        lines += [
            "COPY pocket-build/ /pocket-build/",
            BUILD_STEP,
        ]
    lines.append(f"USER {USER}")
    return "\n".join(lines) + "\n"


def _build_script(build: str, ca: bool) -> bytes:
    script = ["set -e", "cd /tool"]
    if ca:
        cert = "/pocket-build/ca.crt"
        script.append(
            f"export PIP_CERT={cert} SSL_CERT_FILE={cert} REQUESTS_CA_BUNDLE={cert} NODE_EXTRA_CA_CERTS={cert}"
            f" npm_config_cafile={cert}"
        )
    script += [
        f'if [ -n "${{{INDEX_ARG}:-}}" ]; then export PIP_INDEX_URL="${INDEX_ARG}"; fi',
        f"unset {INDEX_ARG} {INDEX_ARG.lower()}",
        "export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore HOME=/root",
        f"/bin/sh -c {shlex.quote(build)}",
    ]
    return ("\n".join(script) + "\n").encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    tar.addfile(info)


def _redactor(url: str) -> Callable[[str], str]:
    """A function hiding `url` (a package index, maybe with user:password) and its credentials in build output.

    The URL is replaced whole, and also as pip prints it (`https://user:****@host/simple`: its host and
    path); a password is replaced wherever it appears.
    """
    if not url:
        return lambda text: text
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
            pairs[parts.password] = "***"
            pairs[unquote(parts.password)] = "***"
    ordered = sorted(((s, r) for s, r in pairs.items() if len(s) >= 3), key=lambda pair: -len(pair[0]))

    def redact(text: str) -> str:
        for secret, replacement in ordered:
            text = text.replace(secret, replacement)
        return text

    return redact


class _BuildWatch:
    """Stops a build at its deadline by killing the container running `entrypoint.build`.

    The classic builder then fails the build and removes that container, and the blocked read of its
    progress returns. (Closing the build's response would cancel it too, but the docker SDK keeps the
    response inside its generator.) The container is the one announced right after BUILD_STEP's line, before
    any output of the build itself, which may print anything.
    """

    def __init__(self, kill: Callable[[str], None]):
        self._kill = kill
        self._at_step = False
        self.container: str | None = None
        self.expired = threading.Event()

    def saw(self, line: str) -> bool:
        """Follow the builder's progress, one line at a time; True at the line naming the build step's container."""
        if self.container is not None:
            return False
        match = _RUNNING_IN.match(line)
        if self._at_step and match:
            self.container = match.group(1)
            if self.expired.is_set():
                self._kill(self.container)
            return True
        self._at_step = line.startswith("Step ") and line.endswith(f" : {BUILD_STEP}")
        return False

    def expire(self) -> None:
        self.expired.set()
        if self.container is not None:
            self._kill(self.container)


# --------------------------------------------------------------------------------------------------
# The attach stream: docker's multiplexed frames, read with caps and a deadline


class _Stream:
    """One attached container connection: writes stdin, demultiplexes stdout/stderr frames."""

    def __init__(self, raw: Any):
        self.raw = raw  # keeps the HTTP response (and so the connection) alive
        self.sock: socket.socket = raw._sock if hasattr(raw, "_sock") else raw
        self.sock.setblocking(False)
        self.pending = bytearray()  # bytes read but not parsed yet
        self.eof = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(Exception):
            self.raw.close()

    def send(self, data: bytes, deadline: float, on_frame: Callable[[int, bytes], bool] | None = None) -> bool:
        """Write all of `data`, reading output meanwhile (a tool may answer before it reads all its stdin)."""
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, writable, _ = select.select([self.sock], [self.sock], [], left)
            if readable and not self.eof:
                if not self._read_once(on_frame) and self.eof:
                    return True  # the tool is gone; what it did not read does not matter
            if writable:
                try:
                    sent = self.sock.send(view[:65536])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return True  # the container closed its stdin: it exited or does not read
                view = view[sent:]
        return True

    def idle(self) -> bool:
        """True when nothing waits to be read: a pooled launcher writes nothing until its call, so anything
        there (usually the end of the stream) means the container is of no use."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            return not readable
        except (OSError, ValueError):
            return False

    def alive(self) -> bool:
        """False once the container closed the stream; output written since the last call is dropped (a warm
        handler's background thread may log between calls: that belongs to no call, and is no death)."""
        try:
            for _ in range(64):  # bounded: a handler that never stops writing is still alive
                if not select.select([self.sock], [], [], 0)[0]:
                    break
                if not self._read_once(None) and self.eof:
                    return False
            return True
        except (OSError, ValueError):
            return False

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def _read_once(self, on_frame: Callable[[int, bytes], bool] | None) -> bool:
        try:
            chunk = self.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.pending += chunk
        return self._parse(on_frame)

    def _parse(self, on_frame: Callable[[int, bytes], bool] | None) -> bool:
        """Hand complete frames to `on_frame`; False when it asks to stop."""
        pending = self.pending
        offset = 0
        keep_going = True
        while len(pending) - offset >= 8:
            kind, size = struct.unpack_from(">BxxxL", pending, offset)
            if len(pending) - offset - 8 < size:
                break
            payload = bytes(pending[offset + 8 : offset + 8 + size])
            offset += 8 + size
            if on_frame is not None and not on_frame(kind, payload):
                keep_going = False
                break
        del pending[:offset]
        return keep_going

    def read_until(self, deadline: float, on_frame: Callable[[int, bytes], bool]) -> str:
        """Read frames until EOF ("eof"), `on_frame` returns False ("stop") or the deadline ("timeout")."""
        if self.pending and not self._parse(on_frame):
            return "stop"
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            readable, _, _ = select.select([self.sock], [], [], left)
            if readable and not self._read_once(on_frame):
                if self.eof:
                    break
                return "stop"
        return "eof"


class _Output:
    """stdout kept up to a cap (the rest counted and dropped), stderr's tail kept.

    With a nonce, it also watches both streams for the launcher's closing line (`\\x1e<nonce> <status>`),
    which carries the tool's exit status: `finished` once both streams delivered it.
    """

    def __init__(self, cap: int, nonce: str = ""):
        self.cap = cap
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.dropped = 0
        self.trailer = re.compile(b"\x1e" + re.escape(nonce.encode()) + b" ([0-9]{1,3})\n$") if nonce else None
        self.tails = {1: bytearray(), 2: bytearray()}
        self.statuses: dict[int, int] = {}

    @property
    def finished(self) -> bool:
        return len(self.statuses) == 2

    @property
    def exit_code(self) -> int | None:
        return self.statuses.get(1)

    def on_frame(self, kind: int, payload: bytes) -> bool:
        if kind not in (1, 2) or kind in self.statuses:
            return True  # stdin echo, or output after the closing line: not the tool's result
        if kind == 2:
            self.stderr += payload
            if len(self.stderr) > 2 * STDERR_KEEP:
                del self.stderr[:-STDERR_KEEP]
        else:
            room = self.cap - len(self.stdout)
            if room > 0:
                self.stdout += payload[:room]
            self.dropped += max(0, len(payload) - max(room, 0))
        if self.trailer is not None:
            tail = self.tails[kind]
            tail += payload[-64:]
            del tail[:-64]
            match = self.trailer.search(tail)
            if match:
                self.statuses[kind] = int(match.group(1))
                self._strip(kind, len(match.group(0)))
                return not self.finished
        return kind == 2 or self.dropped <= DRAIN_FACTOR * self.cap

    def _strip(self, kind: int, size: int) -> None:
        if kind == 2:
            del self.stderr[len(self.stderr) - size :]
            return
        total = len(self.stdout) + self.dropped - size
        if total <= len(self.stdout):
            del self.stdout[total:]
            self.dropped = 0
        else:
            self.dropped = total - len(self.stdout)

    def stderr_text(self) -> str:
        return bytes(self.stderr[-STDERR_KEEP:]).decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------------
# Containers


@dataclass(frozen=True)
class _Spec:
    """Everything a container of one pool is created from."""

    image: str
    tool: str
    limits_key: tuple[Any, ...]
    command: tuple[str, ...]
    mode: str  # "call" or "warm"


@dataclass
class _Started:
    """A started container with its attached stream, waiting for a call."""

    id: str
    stream: _Stream
    started: float = field(default_factory=time.monotonic)


def _process_start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def owner_label() -> str:
    """hostname:pid:start — enough to tell later whether the runner that made a container still lives."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start_ticks(os.getpid()) or 0}"


def _owner_alive(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine's (or an unreadable) label: never ours to judge
    ticks = _process_start_ticks(int(pid_text))
    return ticks is not None and (start in ("0", "") or ticks == start)


class _Pool:
    """Started containers of one spec, waiting for calls; refilled in the background."""

    def __init__(self, sandbox: Sandbox, spec: _Spec, size: int, most: int):
        self.sandbox, self.spec, self.size, self.most = sandbox, spec, size, max(size, most)
        self.idle: deque[_Started] = deque()
        self.starting = 0
        self.in_use = 0  # taken and not yet released: the concurrent calls of this spec
        self.lock = threading.Lock()
        self.closed = False

    def take(self) -> _Started:
        with self.lock:
            self.in_use += 1
            self.size = max(self.size, min(self.in_use, self.most))  # the next burst finds them ready
        while True:
            with self.lock:
                started = self.idle.popleft() if self.idle else None
            if started is None or started.stream.idle():
                break
            self.sandbox._discard(started)  # it died while waiting (engine restart, someone removed it)
        self.refill()
        if started is not None:
            return started
        try:
            return self.sandbox._start(self.spec)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        with self.lock:
            self.in_use -= 1

    def refill(self) -> None:
        with self.lock:
            wanted = self.size - len(self.idle) - self.starting
            if self.closed or wanted <= 0:
                return
            self.starting += wanted
        for _ in range(wanted):
            self.sandbox._background(self._start_one)

    def _start_one(self) -> None:
        self.sandbox._wait_quiet(QUIET_START)
        try:
            started = None if self.closed else self.sandbox._start(self.spec)
        except Exception:  # the next call starts its own container and reports the error
            started = None
        with self.lock:
            self.starting -= 1
            if started is not None and not self.closed:
                self.idle.append(started)
                started = None
        if started is not None:
            self.sandbox._discard(started)

    def close(self) -> list[_Started]:
        with self.lock:
            self.closed = True
            idle, self.idle = list(self.idle), deque()
        return idle


class _WarmWorker:
    """A warm container serving one call at a time through JSON lines."""

    def __init__(self, started: _Started):
        self.started = started
        self.last_used = time.monotonic()
        self.line = bytearray()
        self.stderr = bytearray()
        self.broken = False

    def call(self, environment: Mapping[str, str], body: Any, limits: Limits) -> tuple[str, Any, str]:
        """("ok"|"error"|"bad_reply"|"timeout"|"exited"|"too_big", value or error, stderr tail).

        The reply is one JSON line on stdout carrying the request's id; warm.py then writes `\x1e<id>` on
        stderr, so everything the handler wrote to stderr has arrived too (the two streams are not ordered
        between them). A line that is not JSON fails the call; a reply with another id (one the handler
        forged, or a late one) is skipped. Either way the protocol is corrupted: the container is discarded.
        """
        self.stderr.clear()
        nonce = uuid.uuid4().hex
        marker = b"\x1e" + nonce.encode() + b"\n"
        request = json.dumps({"id": nonce, "env": dict(environment), "body": body}).encode() + b"\n"
        deadline = time.monotonic() + limits.timeout
        answers: list[dict[str, Any]] = []
        not_protocol: list[bytes] = []
        too_big = False
        stderr_done = False

        def take_lines() -> None:
            while not answers and not not_protocol and b"\n" in self.line:
                line, _, rest = bytes(self.line).partition(b"\n")
                self.line = bytearray(rest)
                try:  # NaN and infinities, which JSON cannot hold, become null (as for function tools)
                    answer = json.loads(line, parse_constant=lambda _constant: None)
                except ValueError:
                    answer = None
                if not isinstance(answer, dict):
                    not_protocol.append(line)
                elif answer.get("id") == nonce:
                    answers.append(answer)
                else:
                    self.broken = True

        def on_frame(kind: int, payload: bytes) -> bool:
            nonlocal too_big, stderr_done
            if kind == 2 and not stderr_done:
                self.stderr += payload
                if self.stderr.endswith(marker):
                    del self.stderr[-len(marker) :]
                    stderr_done = True
                elif len(self.stderr) > 2 * STDERR_KEEP:
                    del self.stderr[:-STDERR_KEEP]
            elif kind == 1 and not answers:
                self.line += payload
                take_lines()
                too_big = not answers and len(self.line) > limits.output_limit
            return not (answers and stderr_done) and not not_protocol and not too_big

        stream = self.started.stream
        if not stream.send(request, deadline, on_frame):
            return "timeout", None, self._stderr()
        done = (answers and stderr_done) or not_protocol or too_big
        state = "stop" if done else stream.read_until(deadline, on_frame)
        if not_protocol:  # the handler wrote to the protocol's fd: nothing it says can be trusted now
            self.broken = True
            return "bad_reply", not_protocol[0][:200].decode("utf-8", "replace"), self._stderr()
        if answers and stderr_done:
            if answers[0].get("ok"):
                return "ok", answers[0].get("value"), self._stderr()
            return "error", answers[0].get("error") or "the handler failed", self._stderr()
        self.broken = True
        if too_big:
            return "too_big", None, self._stderr()
        return ("timeout" if state == "timeout" else "exited"), None, self._stderr()

    def _stderr(self) -> str:
        return bytes(self.stderr[-STDERR_KEEP:]).decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------------
# The sandbox


class Sandbox:
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

    # -- images ------------------------------------------------------------------------------------

    def base_image(self, manifest: Manifest) -> str:
        if manifest.base_image:
            return manifest.base_image
        if (manifest.language or "python") == "node":
            return self.settings.node_image
        return self.settings.python_image

    def _base_id(self, base: str, manifest: Manifest) -> str:
        import docker.errors

        try:
            return self.api.inspect_image(base)["Id"]
        except docker.errors.ImageNotFound:
            pass
        self._say(f"pulling base image {base}")
        try:
            self.api.pull(base)
            return self.api.inspect_image(base)["Id"]
        except docker.errors.APIError as exc:
            if manifest.base_image:
                hint = (
                    f"build it (docker build -t {base} ...) or pull it (docker pull {base}) on this machine, "
                    f"or edit the tool's baseImage"
                )
            else:
                setting = "sandbox.node_image" if (manifest.language or "python") == "node" else "sandbox.python_image"
                hint = f"pull or load it, or point {setting} at an image this machine has"
            raise SandboxError(
                f"base image {base!r} is not on this machine and cannot be pulled ({exc.explanation or exc}); {hint}"
            ) from None

    def _context(self, manifest: Manifest, base_id: str) -> _Context:
        files = _tool_files(manifest.folder)
        self._check_context_size(manifest, files)
        ca_path = self.settings.ca_bundle or _default_ca_bundle()
        build = manifest.entrypoint.build
        ca = ca_path.read_bytes() if build and ca_path is not None and ca_path.is_file() else None
        dockerfile = _dockerfile(base_id, bool(build))
        script = _build_script(build, ca is not None) if build else None
        h = hashlib.sha256()
        for part in (FORMAT, base_id, dockerfile, manifest.entrypoint.run):
            h.update(part.encode() + b"\0")
        h.update((script or b"") + b"\0")  # holds entrypoint.build
        for name in ("launcher.sh", "warm.py"):
            h.update(_package_file(name) + b"\0")
        for rel, path in files:
            h.update(rel.encode() + b"\0")
            if path.is_symlink():
                h.update(b"link:" + os.readlink(path).encode() + b"\0")
            else:
                h.update(b"x" if os.access(path, os.X_OK) else b"-")
                with path.open("rb") as handle:
                    for block in iter(lambda handle=handle: handle.read(1 << 20), b""):
                        h.update(block)
                h.update(b"\0")
        return _Context(h.hexdigest()[:16], files, dockerfile, script, ca)

    def _check_context_size(self, manifest: Manifest, files: list[tuple[str, Path]]) -> None:
        """Refuse a tool folder over `sandbox.max_context_mb` before reading any of it, naming its largest files."""
        sizes = [(path.lstat().st_size, rel) for rel, path in files if not path.is_symlink()]
        total, limit = sum(size for size, _ in sizes), self.settings.max_context_mb * 1024 * 1024
        if total <= limit:
            return
        largest = ", ".join(f"{rel} ({size / 1048576:.1f} MB)" for size, rel in sorted(sizes, reverse=True)[:3])
        raise SandboxError(
            f"the folder of tool {manifest.name!r} ({manifest.folder}) holds {total / 1048576:.1f} MB, over "
            f"sandbox.max_context_mb = {self.settings.max_context_mb}; largest files: {largest} "
            f"(remove them from the folder, or raise sandbox.max_context_mb)"
        )

    def _tar(self, manifest: Manifest, context: _Context) -> Any:
        """The build context as a tar in a temporary file (a tool folder may be large: not in memory)."""
        buffer = tempfile.TemporaryFile()  # closed by _build
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            _add(tar, "Dockerfile", context.dockerfile.encode())
            _add_dir(tar, "pocket")
            _add(tar, "pocket/launch.sh", _package_file("launcher.sh"), 0o755)
            _add(tar, "pocket/warm.py", _package_file("warm.py"))
            _add(tar, "pocket/entry.sh", (manifest.entrypoint.run + "\n").encode(), 0o755)
            _add_dir(tar, "tool")
            for rel, path in context.files:
                info = tar.gettarinfo(str(path), arcname=f"tool/{rel}")
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isdir() or info.issym():
                    tar.addfile(info)
                    continue
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            if context.build_script is not None:
                _add_dir(tar, "pocket-build")
                _add(tar, "pocket-build/build.sh", context.build_script, 0o755)
                if context.ca_bundle is not None:
                    _add(tar, "pocket-build/ca.crt", context.ca_bundle)
        buffer.seek(0)
        return buffer

    def _stat_key(self, manifest: Manifest, base: str) -> tuple[Any, ...]:
        stats = []
        for rel, path in _tool_files(manifest.folder):
            st = path.lstat()
            stats.append((rel, st.st_size, st.st_mtime_ns, st.st_mode))
        return (str(manifest.folder), manifest.entrypoint, base, tuple(stats))

    def image(self, manifest: Manifest) -> str:
        """The tag of the tool's image, built first when no image holds exactly these contents."""
        base = self.base_image(manifest)
        key = self._stat_key(manifest, base)
        tag = self._images.get(key)
        if tag is not None:
            return tag
        missing = _missing_code(manifest, [rel for rel, *_ in key[3]])
        if missing:
            raise SandboxError(f"this folder has a pocket.json but no code: {missing}")
        context = self._context(manifest, self._base_id(base, manifest))
        tag = f"{image_repository(manifest.name)}:{context.digest}"
        with self._lock:
            lock = self._build_locks.setdefault(tag, threading.Lock())
        with lock:
            if not self._image_exists(tag):
                self._build(manifest, context, tag)
                self._prune_superseded(manifest, tag)
        self._images[key] = tag
        return tag

    def _prune_superseded(self, manifest: Manifest, keep: str) -> None:
        """Remove the images earlier versions of this tool folder built, so edits do not fill the disk.

        Never forced: an image a container still uses (a pool of this or another runner) stays, and this
        sandbox tries again when it closes.
        """
        filters = {"label": [f"{LABEL_TOOL}={manifest.name}", f"{LABEL_FOLDER}={_folder_key(manifest.folder)}"]}
        with contextlib.suppress(Exception):
            for image in self.api.images(filters=filters):
                if keep not in (image.get("RepoTags") or []):
                    self._remove_image(image["Id"], ", ".join(image.get("RepoTags") or []) or image["Id"][:19])

    def _remove_image(self, image_id: str, name: str) -> None:
        try:
            self.api.remove_image(image_id)
        except Exception:
            with self._lock:
                self._superseded[image_id] = name
            return
        with self._lock:
            self._superseded.pop(image_id, None)
        self._say(f"removed the superseded image {name}")

    def _image_exists(self, tag: str) -> bool:
        import docker.errors

        try:
            self.api.inspect_image(tag)
            return True
        except docker.errors.ImageNotFound:
            return False

    def _build(self, manifest: Manifest, context: _Context, tag: str) -> None:
        limit = self.settings.build_timeout_seconds
        self._say(f"building image {tag} for tool {manifest.name!r} (up to sandbox.build_timeout_seconds = {limit:g})")
        tail: deque[str] = deque(maxlen=40)
        index_url = self.settings.pip_index_url.get_secret_value() if self.settings.pip_index_url else ""
        redact = _redactor(index_url)
        watch = _BuildWatch(self._kill)
        timer = threading.Timer(limit, watch.expire)
        timer.daemon = True
        failure: dict[str, Any] | None = None
        context_file = None
        try:
            context_file = self._tar(manifest, context)
            timer.start()
            stream = self.api.build(
                fileobj=context_file,
                custom_context=True,
                tag=tag,
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
                labels={LABEL: "1", LABEL_TOOL: manifest.name, LABEL_FOLDER: _folder_key(manifest.folder)},
                **self._build_isolation(index_url),
            )
            failure = self._follow_build(manifest.name, stream, watch, tail, redact)
        except Exception as exc:
            failure = {"error": str(exc)}
        finally:
            timer.cancel()
            if context_file is not None:
                context_file.close()
        if failure is None and self._image_exists(tag):
            self._say(f"built {tag}")
            return
        log = "\n".join(tail)
        raise BuildError(f"{self._build_failure(manifest, failure, watch, redact)}\n--- build log (tail) ---\n{log}")

    def _follow_build(
        self,
        name: str,
        stream: Iterator[dict[str, Any]],
        watch: _BuildWatch,
        tail: deque[str],
        redact: Callable[[str], str],
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
                    tail.clear()  # the log kept from here on is entrypoint.build's own output
                else:
                    tail.append(line)
        return None

    def _build_isolation(self, index_url: str) -> dict[str, Any]:
        """The build step's limits: no network when tools may have none, capped memory, the index URL kept out of
        the image (see INDEX_ARG). It still runs as root with Docker's default capabilities: the classic builder
        offers nothing else."""
        memory = self.settings.build_memory_mb * 1024 * 1024
        return {
            "buildargs": {INDEX_ARG: index_url} if index_url else {},
            "network_mode": None if self.settings.allow_network else "none",
            "container_limits": {"memory": memory, "memswap": memory},
        }

    def _build_failure(
        self, manifest: Manifest, failure: dict[str, Any] | None, watch: _BuildWatch, redact: Callable[[str], str]
    ) -> str:
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
        if exit_code == 137 and self._oom_killed(started.id, wait=True):
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
        if wait:  # the engine records the OOM kill when the container exits
            self._exit_code(cid)
        try:
            return bool(self.api.inspect_container(cid)["State"].get("OOMKilled"))
        except Exception:
            return False

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
