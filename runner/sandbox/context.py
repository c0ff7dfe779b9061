"""The build context of a tool image, and the content hash that names it.

The tag is a hash of everything that goes in (base image id, tool files, launcher), so an edited tool is
rebuilt and an unchanged one never is. The context is only regular files, directories and symlinks (a
FIFO would block), at most `sandbox.max_context_mb`, and is streamed from a temporary file. A folder with
only a pocket.json whose entrypoint names files is refused before any build (`missing_code`). Builds reach
package indexes through the host's CA bundle (or `sandbox.ca_bundle`), copied in for the build step only.
The programs that run in the container (IN_CONTAINER) come from `runner/sandbox/container/`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import ssl
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from runner.errors import SandboxError
from runner.manifest import Manifest
from runner.sandbox.dependencies import Dependencies, python_dependencies
from runner.sandbox.labels import LABEL, LABEL_FOLDER, LABEL_TOOL, USER
from runner.settings import SandboxSettings

FORMAT = "pocket-runner-image-v2"  # bump to rebuild every tool image after a change to the image layout
EXCLUDED = {".git", "__pycache__", ".venv", "venv", "node_modules", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
# sandbox.pip_index_url reaches the build step as this predefined proxy build argument: the classic builder
# passes those to RUN without an ARG line and, unlike any ARG, keeps them out of the image's history.
INDEX_ARG = "FTP_PROXY"
# The earliest time of a file in the context (ours all have it): 1980-01-02, as ZIP (a wheel) holds no earlier one:
# a build backend that keeps the files' times (flit) failed on 1970's. The tool's files keep their own later times:
# with one time for all, setuptools took a stale build/lib/ copy left by a `pip install .` on the host for as new
# as its source, and installed the old code. (The image's tag hashes contents only.)
MTIME = 315619200
IN_CONTAINER = ("launch.sh", "prestart.py", "warm.py", "pocket_channel.py")  # copied into /pocket of every tool image
BUILD_HOME = "/home/pocket"  # HOME of entrypoint.build and, when it left anything there, of every call
BUILD_STEP = "RUN /bin/sh /pocket-build/build.sh && rm -rf /pocket-build"  # runs entrypoint.build
# Installs a Python tool's declared dependencies, and its build requirements into BUILD_ENV (`dependencies`), before
# its code is copied in: the builder reuses this step while they stay the same, so a code-only edit rebuilds in a
# fraction of the first build's time.
DEPS_STEP = "RUN /bin/sh /pocket-deps/deps.sh && rm -rf /pocket-deps"
COPY_TOOL = "COPY tool/ /tool/"  # the step from which a code edit rebuilds
# The build requirements DEPS_STEP installed: on the build step's PYTHONPATH, removed from the image after it
BUILD_ENV = "/pocket-build-env"


def _container_file(name: str) -> bytes:
    return resources.files("runner.sandbox.container").joinpath(name).read_bytes()


def tool_files(folder: Path) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every regular file and symlink of the tool, minus caches and VCS data.

    FIFOs, sockets and devices are skipped: reading a FIFO would block the build forever.
    """
    return [(rel, Path(path)) for rel, path, _ in _walk(folder)]


def file_stats(folder: Path) -> tuple[tuple[str, int, int, int], ...]:
    """(relative path, size, mtime, mode) of the same files: what tells, on every call, whether the tool changed."""
    return tuple((rel, info.st_size, info.st_mtime_ns, info.st_mode) for rel, _, info in _walk(folder))


def _walk(folder: Path) -> list[tuple[str, str, os.stat_result]]:
    """(relative posix path, path, lstat) of the tool's files, sorted: one scandir per folder and one lstat per
    file, as this runs on every call. A symlinked directory is kept as its link, never followed."""
    found: list[tuple[str, str, os.stat_result]] = []
    pending = [("", str(folder))]
    while pending:
        prefix, where = pending.pop()
        try:
            with os.scandir(where) as listing:
                entries = list(listing)
        except OSError:
            continue  # removed meanwhile, or unreadable
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in EXCLUDED:
                        pending.append((f"{prefix}{entry.name}/", entry.path))
                    continue
                info = entry.stat(follow_symlinks=False)
                linked_folder = stat.S_ISLNK(info.st_mode) and entry.is_dir()
            except OSError:
                continue  # removed meanwhile
            kept = stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)
            if linked_folder:
                if entry.name in EXCLUDED:
                    continue
            elif not kept or entry.name.endswith((".pyc", ".pyo")):
                continue
            found.append((prefix + entry.name, entry.path, info))
    found.sort(key=lambda item: item[0])
    return found


_FILE_ARGUMENT = re.compile(r"^(\.|\./.*|[\w.-][\w./-]*\.(py|js|mjs|cjs|ts|sh|txt|toml|cfg|json|lock|rb|go|jar))$")
_PROJECT_TOOLS = {"npm": "package.json", "yarn": "package.json", "pnpm": "package.json", "poetry": "pyproject.toml"}


def missing_code(manifest: Manifest, files: list[str]) -> str | None:
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


def folder_key(folder: Path) -> str:
    return hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]


@dataclass
class Context:
    """The build context of one tool image and the hash that names it."""

    digest: str
    files: list[tuple[str, Path]]
    dockerfile: str
    build_script: bytes | None
    ca_bundle: bytes | None
    dependencies: Dependencies | None = None  # installed by DEPS_STEP, before the code is copied in

    @classmethod
    def of(cls, manifest: Manifest, base_id: str, settings: SandboxSettings) -> Context:
        """The context of `manifest`'s tool on the base image `base_id`; refuses a folder over the size limit."""
        files = tool_files(manifest.folder)
        _check_size(manifest, files, settings.max_context_mb)
        _check_links(manifest, files)
        ca_path = settings.ca_bundle or _default_ca_bundle()
        build = manifest.entrypoint.build
        ca = ca_path.read_bytes() if build and ca_path is not None and ca_path.is_file() else None
        dependencies = python_dependencies(manifest, files)
        dockerfile = _dockerfile(base_id, bool(build), dependencies is not None)
        build_env = bool(dependencies and dependencies.build_requirements)
        script = _build_script(build, ca is not None, build_env) if build else None
        h = hashlib.sha256()
        for part in (FORMAT, base_id, dockerfile, manifest.entrypoint.run):
            h.update(part.encode() + b"\0")
        h.update((script or b"") + b"\0")  # holds entrypoint.build
        if dependencies is not None:
            h.update(dependencies.requirements + b"\0" + dependencies.build_requirements)
        h.update(b"\0")
        for name in IN_CONTAINER:
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
        return cls(h.hexdigest()[:16], files, dockerfile, script, ca, dependencies)

    def tar(self, manifest: Manifest) -> Any:
        """The build context as a tar in a temporary file (a tool folder may be large: not in memory)."""
        buffer = tempfile.TemporaryFile()  # closed by the build
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            _add(tar, "Dockerfile", _labelled(self.dockerfile, manifest).encode())
            _add_dir(tar, "pocket")
            for name in IN_CONTAINER:  # the same list the hash covers
                _add(tar, f"pocket/{name}", _container_file(name), 0o755 if name.endswith(".sh") else 0o644)
            _add(tar, "pocket/entry.sh", (manifest.entrypoint.run + "\n").encode(), 0o755)
            if self.dependencies is not None:
                _add_dir(tar, "pocket-deps")
                _add(tar, "pocket-deps/deps.sh", _deps_script(self.dependencies, self.ca_bundle is not None), 0o755)
                _add(tar, "pocket-deps/requirements.txt", self.dependencies.requirements)
                _add(tar, "pocket-deps/build-requirements.txt", self.dependencies.build_requirements)
                if self.ca_bundle is not None:
                    _add(tar, "pocket-deps/ca.crt", self.ca_bundle)
            _add_dir(tar, "tool")
            for rel, path in self.files:
                info = tar.gettarinfo(str(path), arcname=f"tool/{rel}")
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = max(MTIME, int(info.mtime))
                if info.isdir() or info.issym():
                    tar.addfile(info)
                    continue
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            if self.build_script is not None:
                _add_dir(tar, "pocket-build")
                _add(tar, "pocket-build/build.sh", self.build_script, 0o755)
                if self.ca_bundle is not None:
                    _add(tar, "pocket-build/ca.crt", self.ca_bundle)
        buffer.seek(0)
        return buffer


def _check_links(manifest: Manifest, files: list[tuple[str, Path]]) -> None:
    """Refuse a file hard-linked from outside the folder: its contents (a key file, say) would be copied into
    the image readable by the tool's user, whatever the other link's mode. Links within the folder are fine."""
    links: dict[tuple[int, int], list[str]] = {}
    counts: dict[tuple[int, int], int] = {}
    for rel, path in files:
        st = path.lstat()
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            links.setdefault(key, []).append(rel)
            counts[key] = st.st_nlink
    outside = sorted(rels[0] for key, rels in links.items() if len(rels) < counts[key])
    if outside:
        raise SandboxError(
            f"the folder of tool {manifest.name!r} ({manifest.folder}) holds hard links to files outside it: "
            f"{', '.join(outside[:5])}; copy those files into the folder instead of linking them"
        )


def _check_size(manifest: Manifest, files: list[tuple[str, Path]], limit_mb: int) -> None:
    """Refuse a tool folder over `sandbox.max_context_mb` before reading any of it, naming its largest files."""
    sizes = [(path.lstat().st_size, rel) for rel, path in files if not path.is_symlink()]
    total, limit = sum(size for size, _ in sizes), limit_mb * 1024 * 1024
    if total <= limit:
        return
    largest = ", ".join(f"{rel} ({size / 1048576:.1f} MB)" for size, rel in sorted(sizes, reverse=True)[:3])
    raise SandboxError(
        f"the folder of tool {manifest.name!r} ({manifest.folder}) holds {total / 1048576:.1f} MB, over "
        f"sandbox.max_context_mb = {limit_mb}; largest files: {largest} "
        f"(remove them from the folder, or raise sandbox.max_context_mb)"
    )


def _dockerfile(base_id: str, has_build: bool, has_dependencies: bool = False) -> str:
    """The steps that change least come first: the builder reuses every step up to the first that changed."""
    lines = [f"FROM {base_id}", "WORKDIR /tool", "COPY pocket/ /pocket/"]
    if has_dependencies:  # before the tool's files: the builder keeps this step while only code changes
        lines += ["COPY pocket-deps/ /pocket-deps/", DEPS_STEP]
    if has_build:
        lines.append("COPY pocket-build/ /pocket-build/")  # entrypoint.build and the CA bundle: rarely edited
    lines.append(COPY_TOOL)
    if has_build:
        lines.append(BUILD_STEP)
    lines.append(f"USER {USER}")
    return "\n".join(lines) + "\n"


def _labelled(dockerfile: str, manifest: Manifest) -> str:
    """The Dockerfile with the image's labels, in one step (labels given to the build would be a step each), before
    the tool's code: a code edit reuses it. Not part of the hash: the same contents in another folder make the
    same image."""
    labels = {LABEL: "1", LABEL_TOOL: manifest.name, LABEL_FOLDER: folder_key(manifest.folder)}
    step = "LABEL " + " ".join(f"{name}={json.dumps(value)}" for name, value in labels.items())
    return dockerfile.replace(f"\n{COPY_TOOL}\n", f"\n{step}\n{COPY_TOOL}\n", 1)


def _environment(ca: str | None) -> list[str]:
    """The shell lines both build steps start with: the CA bundle at `ca`, the package index, pip without a cache."""
    lines = []
    if ca:
        lines.append(
            f"export PIP_CERT={ca} SSL_CERT_FILE={ca} REQUESTS_CA_BUNDLE={ca} NODE_EXTRA_CA_CERTS={ca}"
            f" npm_config_cafile={ca}"
        )
    return [
        *lines,
        f'if [ -n "${{{INDEX_ARG}:-}}" ]; then export PIP_INDEX_URL="${INDEX_ARG}"; fi',
        f"unset {INDEX_ARG} {INDEX_ARG.lower()}",
        "export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore",
    ]


def _build_script(build: str, ca: bool, build_env: bool = False) -> bytes:
    script = ["set -e", "cd /tool", *_environment("/pocket-build/ca.crt" if ca else None)]
    if build_env:
        # The build requirements are installed already (BUILD_ENV, when DEPS_STEP installed everything): pip builds
        # the tool with them instead of installing them again in an isolated environment, which would put them
        # first on the path too. (pip reads PIP_NO_BUILD_ISOLATION=0 as the flag.)
        script.append(
            f"if [ -d {BUILD_ENV} ]; then export PIP_NO_BUILD_ISOLATION=0"
            f' PYTHONPATH="{BUILD_ENV}${{PYTHONPATH:+:$PYTHONPATH}}" PATH="{BUILD_ENV}/bin:$PATH"; fi'
        )
    script += [
        # The build's home is the call's (launch.sh), so what it installs under ~ is there at call time.
        f"export HOME={BUILD_HOME}",
        'mkdir -p "$HOME"',
        f"/bin/sh -c {shlex.quote(build)}",
        f'if [ -n "$(ls -A {BUILD_HOME})" ]; then chmod -R a+rX {BUILD_HOME}; else rmdir {BUILD_HOME}; fi',
    ]
    if build_env:
        script.append(f"rm -rf {BUILD_ENV}")  # the tool's calls run with what it installed, not what built it
    return ("\n".join(script) + "\n").encode()


def _deps_script(dependencies: Dependencies, ca: bool) -> bytes:
    """DEPS_STEP: install the tool's declared requirements into the image and, at the same time, its build
    requirements into BUILD_ENV (`--target` ignores what is installed: the newest that satisfy them, as in pip's
    isolated build environment); the latter's output follows. Best effort: when either fails, the build step
    installs what is missing, in pip's isolated build environment (BUILD_ENV removed), and fails saying why if it
    cannot."""
    script = [*_environment("/pocket-deps/ca.crt" if ca else None), "export HOME=/tmp", "ahead=installed"]
    log = "/pocket-deps/build-env.log"  # removed with the folder after the step
    if dependencies.build_requirements:
        script.append(f"pip install --target {BUILD_ENV} -r /pocket-deps/build-requirements.txt > {log} 2>&1 &")
    if dependencies.requirements:
        script.append("pip install -r /pocket-deps/requirements.txt || ahead=failed")
    if dependencies.build_requirements:
        script.append(f"wait $! || ahead=failed; cat {log}")
    script += [
        'if [ "$ahead" = failed ]; then',
        f"  rm -rf {BUILD_ENV}",
        '  echo "pocket: installing the dependencies ahead failed; the build step installs them"',
        "fi",
    ]
    return ("\n".join(script) + "\n").encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, MTIME
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
    tar.addfile(info)
