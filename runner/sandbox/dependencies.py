"""What a Python tool's build will pip-install, read from its folder before the build, so a step ahead of its code
installs it: the tool's requirements into the image, its build requirements into a folder only the build step
sees. The builder reuses that step while they stay the same, so a code-only edit rebuilds without them.

Read conservatively: whatever this cannot tell for sure is left to the build step, which then builds as pip
alone would. Nothing goes ahead when the build names another package source (an index, find-links: ahead, those
names would come from the default index) or hashes (they would not be checked). The build requirements go ahead
only when everything the build's pip commands install does too and the backend asks for nothing more: on the
build step's path they count as installed for anything pip resolves there (wheel's `packaging`, say), which
would then leave the image with them.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.manifest import Manifest

# What pip (23, the base images') builds a pyproject.toml without a `[build-system]` table with: PEP 518's default
LEGACY_BUILD_REQUIRES = ["setuptools>=40.8.0", "wheel"]
# A build command's parts, and those that install with pip (`pip`, `pip3`, `python -m pip`, `python3 -m pip`)
_PARTS = re.compile(r"&&|\|\||[;&|\n]")
_PIP_INSTALL = re.compile(r"(?:python3? -m )?pip3? install\b(.*)")
# Other commands known not to run pip (hyperpocket's tools: apt-get before, `playwright install` after)
_OTHER_COMMANDS = frozenset({"apt-get", "apt", "playwright", "echo", "mkdir", "cp", "mv", "rm", "chmod", "ln", "true"})
# `pip install` flags that take no value and leave where packages come from alone
_PLAIN_FLAGS = frozenset({
    "-e", "--editable", "-U", "--upgrade", "-q", "--quiet", "-v", "--verbose", "--user", "--no-cache-dir", "--pre",
    "--force-reinstall", "--no-deps", "--no-build-isolation", "--no-compile", "--no-warn-script-location",
})  # fmt: skip
# Options that change where packages come from, on the command line or in a requirements file
_SOURCE_OPTIONS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--no-index", "--hash")
# Backends that ask for nothing beyond `[build-system] requires` (setuptools adds setup.py's and setup.cfg's
# setup_requires, hatchling its hooks' dependencies: plain without those files or `[tool.hatch]`)
_PLAIN_BACKENDS = frozenset({
    "setuptools.build_meta", "setuptools.build_meta:__legacy__", "hatchling.build", "flit_core.buildapi",
    "poetry.core.masonry.api", "pdm.backend",
})  # fmt: skip
_LEGACY_BACKEND = "setuptools.build_meta:__legacy__"


@dataclass(frozen=True)
class Dependencies:
    """What the step ahead installs, as requirements files (each may be empty): the tool's, and what building it
    takes (pyproject.toml's `[build-system] requires`, or LEGACY_BUILD_REQUIRES without that table)."""

    requirements: bytes
    build_requirements: bytes


class _Unknown(Exception):
    """What the build installs cannot be read safely (another source, another folder, a file not read): nothing
    goes ahead."""


@dataclass
class _Reading:
    lines: list[str]
    building: list[str]
    complete: bool = True  # everything the build's pip commands install is in `lines`


def python_dependencies(manifest: Manifest, files: list[tuple[str, Path]]) -> Dependencies | None:
    """What `manifest`'s build pip-installs from its folder (`pip install .`: pyproject.toml's `[project]
    dependencies` and `[build-system] requires`; `-r FILE`), to install ahead; None when nothing can be."""
    present = dict(files)
    reading = _Reading([], [])
    try:
        for part in _PARTS.split(manifest.entrypoint.build or ""):
            words = shlex.split(part)
            match = _PIP_INSTALL.fullmatch(part.strip())
            if match is not None:
                _read_pip_install(shlex.split(match.group(1)), present, reading)
            elif words and words[0] in ("cd", "pushd"):
                raise _Unknown  # `.` is another folder after it
            elif words and words[0] not in _OTHER_COMMANDS:
                reading.complete = False  # it may run pip itself
    except (_Unknown, ValueError):  # ValueError: shlex, an unbalanced quote
        return None
    building = reading.building if reading.complete else []
    if not reading.lines and not building:
        return None
    return Dependencies(_requirements_file(reading.lines), _requirements_file(building))


def _read_pip_install(words: list[str], present: dict[str, Path], reading: _Reading) -> None:
    for before, word in zip(["", *words], words, strict=False):
        if before in ("-r", "--requirement"):
            path = present.get(word)
            if path is None or path.is_symlink():  # a link may lead out of the folder: not read
                raise _Unknown
            _read_requirements_file(path, reading)
        elif word in (".", "./"):
            path = present.get("pyproject.toml")
            if path is None or path.is_symlink():
                reading.complete = False  # setup.py alone: pip builds it its way
                continue
            _read_pyproject(path, set(present), reading)
        elif _source_option(word):
            raise _Unknown
        elif word not in _PLAIN_FLAGS and word not in ("-r", "--requirement"):
            reading.complete = False  # a package, a flag with a value: resolved by the build step


def _read_requirements_file(path: Path, reading: _Reading) -> None:
    """A requirements file's requirements; includes and editables are left to the build step."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        raise _Unknown from None
    for line in text.replace("\\\n", " ").splitlines():  # joined where a line goes on, as pip reads it
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if any(_source_option(token) for token in line.split()):
            raise _Unknown
        if line.startswith("-"):
            reading.complete = False
        else:
            reading.lines.append(line)
            reading.complete &= not _direct_reference(line)


def _read_pyproject(path: Path, files: set[str], reading: _Reading) -> None:
    """pyproject.toml's `[project] dependencies`, and its build requirements when its backend asks for no more and
    the dependencies are static (no `[project]` table, or `dependencies` in its `dynamic`: the build computes
    them)."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise _Unknown from None
    project = document.get("project")
    build_system = document.get("build-system", {"requires": LEGACY_BUILD_REQUIRES, "build-backend": _LEGACY_BACKEND})
    declared = _strings(project, "dependencies")
    reading.lines += declared
    reading.building += _strings(build_system, "requires")
    backend = build_system.get("build-backend", _LEGACY_BACKEND) if isinstance(build_system, dict) else None
    backend = backend if isinstance(backend, str) else None
    reading.complete &= (
        isinstance(project, dict)
        and "dependencies" not in _strings(project, "dynamic")
        and not any(_direct_reference(line) for line in declared)
        and backend in _PLAIN_BACKENDS
        and not (backend.startswith("setuptools") and files & {"setup.py", "setup.cfg"})
        and not (backend == "hatchling.build" and "hatch" in (document.get("tool") or {}))
    )


def _source_option(word: str) -> bool:
    """An option naming where packages come from: `--index-url URL`, `--index-url=URL`, `-iURL`..."""
    return word.split("=")[0] in _SOURCE_OPTIONS or (not word.startswith("--") and word[:2] in ("-i", "-f"))


def _direct_reference(requirement: str) -> bool:
    """`name @ URL`, a URL or a path: pip prepares those again at the build step, whatever is installed."""
    return "@" in requirement or "://" in requirement or requirement.startswith((".", "/", "git+", "file:"))


def _strings(table: Any, key: str) -> list[str]:
    """The strings of a list in a pyproject.toml table; nothing from a malformed one (pip will say what is wrong)."""
    items = table.get(key) if isinstance(table, dict) else None
    return [item for item in items if isinstance(item, str)] if isinstance(items, list) else []


def _requirements_file(lines: list[str]) -> bytes:
    unique = list(dict.fromkeys(lines))
    return ("\n".join(unique) + "\n").encode() if unique else b""
