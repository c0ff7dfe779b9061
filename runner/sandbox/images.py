"""Tool images: the build context, the content hash that names an image, and the build.

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

The programs that run in the container (launch.sh, warm.py) are read from `runner/sandbox/container/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shlex
import ssl
import stat
import tarfile
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import BuildError, SandboxError
from runner.manifest import Manifest
from runner.redaction import REDACTED, Redactor
from runner.sandbox.labels import LABEL, LABEL_FOLDER, LABEL_TOOL, USER
from runner.settings import SandboxSettings

if TYPE_CHECKING:
    from runner.sandbox.engine import DockerEngine

FORMAT = "pocket-runner-image-v1"  # bump to rebuild every tool image after a change to the image layout
EXCLUDED = {".git", "__pycache__", ".venv", "venv", "node_modules", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# sandbox.pip_index_url reaches the build step as this predefined proxy build argument: the classic builder
# passes those to RUN without an ARG line and, unlike any ARG, keeps them out of the image's history.
INDEX_ARG = "FTP_PROXY"
BUILD_STEP = "RUN /bin/sh /pocket-build/build.sh && rm -rf /pocket-build"  # runs entrypoint.build
# The classic builder announces a step's container like this, after the step's line and before its output.
_RUNNING_IN = re.compile(r"^ ---> Running in ([0-9a-f]{12,64})$")


def _container_file(name: str) -> bytes:
    return resources.files("runner.sandbox.container").joinpath(name).read_bytes()


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


class ImageBuilder:
    """Finds or builds the image of a tool, and removes the images its earlier versions built.

    Caches which tool contents have which tag (by file stats, so an unchanged tool costs a few stat calls).
    """

    def __init__(self, engine: DockerEngine, settings: SandboxSettings, say: Callable[[str], None]):
        self._engine = engine
        self.settings = settings
        self._say = say
        self._lock = threading.Lock()
        self._images: dict[tuple[Any, ...], str] = {}  # (folder, entrypoint, base, file stats) -> tag
        self._build_locks: dict[str, threading.Lock] = {}
        self._superseded: dict[str, str] = {}  # image id -> name: images of edited tools still in use

    @property
    def api(self) -> Any:
        return self._engine.api

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
        for name in ("launch.sh", "warm.py"):
            h.update(_container_file(name) + b"\0")
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
            _add(tar, "pocket/launch.sh", _container_file("launch.sh"), 0o755)
            _add(tar, "pocket/warm.py", _container_file("warm.py"))
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
        redact = _index_redactor(index_url)
        watch = _BuildWatch(self._engine.kill)
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
        self, manifest: Manifest, failure: dict[str, Any] | None, watch: _BuildWatch, redact: Redactor
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

    def close(self) -> None:
        """Remove the superseded images that were still in use before (their containers are gone now)."""
        with self._lock:
            superseded = list(self._superseded.items())
        for image_id, name in superseded:
            self._remove_image(image_id, name)
