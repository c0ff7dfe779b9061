"""The build context of a tool image, and the content hash that names it.

The tag is a hash of everything that goes in (base image id, tool files, launcher), so an edited tool is
rebuilt and an unchanged one never is. The context is only regular files, directories and symlinks (a
FIFO would block), at most `sandbox.max_context_mb`, and is streamed from a temporary file. A folder with
only a pocket.json whose entrypoint names files is refused before any build (`missing_code`). Builds reach
package indexes through the host's CA bundle (or `sandbox.ca_bundle`), copied in for the build step only.
The programs that run in the container (launch.sh, prestart.py, warm.py) come from `runner/sandbox/container/`.
"""

from __future__ import annotations

import hashlib
import io
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
from runner.sandbox.labels import USER
from runner.settings import SandboxSettings

FORMAT = "pocket-runner-image-v1"  # bump to rebuild every tool image after a change to the image layout
EXCLUDED = {".git", "__pycache__", ".venv", "venv", "node_modules", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
# sandbox.pip_index_url reaches the build step as this predefined proxy build argument: the classic builder
# passes those to RUN without an ARG line and, unlike any ARG, keeps them out of the image's history.
INDEX_ARG = "FTP_PROXY"
IN_CONTAINER = ("launch.sh", "prestart.py", "warm.py")  # copied into /pocket of every tool image
BUILD_HOME = "/home/pocket"  # HOME of entrypoint.build and, when it left anything there, of every call
BUILD_STEP = "RUN /bin/sh /pocket-build/build.sh && rm -rf /pocket-build"  # runs entrypoint.build


def _container_file(name: str) -> bytes:
    return resources.files("runner.sandbox.container").joinpath(name).read_bytes()


def tool_files(folder: Path) -> list[tuple[str, Path]]:
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

    @classmethod
    def of(cls, manifest: Manifest, base_id: str, settings: SandboxSettings) -> Context:
        """The context of `manifest`'s tool on the base image `base_id`; refuses a folder over the size limit."""
        files = tool_files(manifest.folder)
        _check_size(manifest, files, settings.max_context_mb)
        _check_links(manifest, files)
        ca_path = settings.ca_bundle or _default_ca_bundle()
        build = manifest.entrypoint.build
        ca = ca_path.read_bytes() if build and ca_path is not None and ca_path.is_file() else None
        dockerfile = _dockerfile(base_id, bool(build))
        script = _build_script(build, ca is not None) if build else None
        h = hashlib.sha256()
        for part in (FORMAT, base_id, dockerfile, manifest.entrypoint.run):
            h.update(part.encode() + b"\0")
        h.update((script or b"") + b"\0")  # holds entrypoint.build
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
        return cls(h.hexdigest()[:16], files, dockerfile, script, ca)

    def tar(self, manifest: Manifest) -> Any:
        """The build context as a tar in a temporary file (a tool folder may be large: not in memory)."""
        buffer = tempfile.TemporaryFile()  # closed by the build
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            _add(tar, "Dockerfile", self.dockerfile.encode())
            _add_dir(tar, "pocket")
            for name in IN_CONTAINER:  # the same list the hash covers
                _add(tar, f"pocket/{name}", _container_file(name), 0o755 if name.endswith(".sh") else 0o644)
            _add(tar, "pocket/entry.sh", (manifest.entrypoint.run + "\n").encode(), 0o755)
            _add_dir(tar, "tool")
            for rel, path in self.files:
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
        "export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore",
        # The build's home is the call's (launch.sh), so what it installs under ~ is there at call time.
        f"export HOME={BUILD_HOME}",
        'mkdir -p "$HOME"',
        f"/bin/sh -c {shlex.quote(build)}",
        f'if [ -n "$(ls -A {BUILD_HOME})" ]; then chmod -R a+rX {BUILD_HOME}; else rmdir {BUILD_HOME}; fi',
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
