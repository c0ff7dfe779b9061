"""What a Python tool's build will pip-install, read from its folder before the build, so a step ahead of its code
installs it: the tool's requirements into the image, its build requirements into a folder only the build step
sees. The builder reuses that step while they stay the same, so a code-only edit rebuilds without them.

Read by allow-lists: a build command of recognized `pip install` commands (with flags known to take no value)
and of commands known neither to run pip nor to write files; requirements files of plain requirements; a
pyproject.toml whose backend asks for nothing beyond its `requires`. Anything else that could change where
packages come from or what is installed (another command, a flag, an option line, pip's environment or a
backend's configuration) keeps everything behind: the build step builds as pip alone would. Less certain cases
(a URL or path requirement, an editable line, dependencies the build computes) keep only the build requirements
behind: on the build step's path they count as installed for anything pip resolves there (wheel's `packaging`,
say), which would then leave the image with them.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.manifest import Manifest

# What pip (23, the base images') builds a pyproject.toml without a `[build-system]` table with: PEP 518's default
LEGACY_BUILD_REQUIRES = ["setuptools>=40.8.0", "wheel"]
_LEGACY_BACKEND = "setuptools.build_meta:__legacy__"
_PARTS = re.compile(r"&&|\|\||[;|\n]")  # a build command's commands
_SHELL = re.compile(r"[$`<>(){}&]")  # substitutions, redirections, subshells, background: not read
_PIP = (
    ["pip", "install"],
    ["pip3", "install"],
    ["python", "-m", "pip", "install"],
    ["python3", "-m", "pip", "install"],
)
# Commands that neither run pip nor write the files it reads (hyperpocket's tools: apt-get before, playwright after)
_OTHER_COMMANDS = frozenset({"apt-get", "apt", "playwright", "true"})
# `pip install` flags that take no value and change neither where packages come from nor what is installed
_PLAIN_FLAGS = frozenset({
    "-e", "--editable", "-U", "--upgrade", "-q", "--quiet", "-v", "--verbose", "--user", "--no-cache-dir", "--pre",
    "--force-reinstall", "--no-build-isolation", "--no-compile", "--no-warn-script-location",
})  # fmt: skip
_EDITABLE = ("-e", "--editable")
# Backends that ask for nothing beyond `[build-system] requires`, unless configured by what is named here
# (setuptools: setup_requires; hatchling, pdm: hooks and their dependencies; poetry: sources of its own)
_PLAIN_BACKENDS: dict[str, tuple[str, ...]] = {
    "setuptools.build_meta": ("setup.py", "setup.cfg"),
    _LEGACY_BACKEND: ("setup.py", "setup.cfg"),
    "hatchling.build": ("hatch.toml", "tool.hatch"),
    "flit_core.buildapi": (),
    "pdm.backend": ("pdm_build.py", "tool.pdm"),
    "poetry.core.masonry.api": ("tool.poetry",),
}


@dataclass(frozen=True)
class Dependencies:
    """What the step ahead installs, as requirements files (each may be empty): the tool's, and what building it
    takes (pyproject.toml's `[build-system] requires`, or LEGACY_BUILD_REQUIRES without that table)."""

    requirements: bytes
    build_requirements: bytes


class _Unknown(Exception):
    """What the build installs, or from where, cannot be read for sure: nothing goes ahead."""


@dataclass
class _Reading:
    """What the build's pip commands install, as read so far; `complete` while that is all of it, read for sure."""

    requirements: list[str] = field(default_factory=list)
    build_requirements: list[str] = field(default_factory=list)
    complete: bool = True


def python_dependencies(manifest: Manifest, files: list[tuple[str, Path]]) -> Dependencies | None:
    """What `manifest`'s build pip-installs from its folder (`pip install .`: pyproject.toml's `[project]
    dependencies` and `[build-system] requires`; `-r FILE`), to install ahead; None when nothing can be."""
    present = dict(files)
    reading = _Reading()
    try:
        for part in _PARTS.split(manifest.entrypoint.build or ""):
            _read_command(part, present, reading)
    except _Unknown:
        return None
    building = reading.build_requirements if reading.complete else []
    if not reading.requirements and not building:
        return None
    return Dependencies(_requirements_file(reading.requirements), _requirements_file(building))


def _read_command(part: str, present: dict[str, Path], reading: _Reading) -> None:
    if _SHELL.search(part):
        raise _Unknown
    try:
        words = shlex.split(part)
    except ValueError:  # an unbalanced quote
        raise _Unknown from None
    pip = next((len(prefix) for prefix in _PIP if words[: len(prefix)] == prefix), None)
    if pip is not None:
        _read_pip_install(words[pip:], present, reading)
    elif words and words[0] not in _OTHER_COMMANDS:
        raise _Unknown  # a script, `cd`, `export PIP_INDEX_URL=...`: it may change what pip does


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
                raise _Unknown  # setup.py alone: pip builds it its way
            _read_pyproject(path, set(present), reading)
        elif word in ("-r", "--requirement"):
            continue
        elif word.startswith("-") and word not in _PLAIN_FLAGS:
            raise _Unknown  # `--index-url URL`, `-iURL`, `--no-deps`, `--target DIR`...
        elif before not in _EDITABLE and not word.startswith("-"):
            raise _Unknown  # a package named on the command line, or a flag's value
        elif before in _EDITABLE:
            reading.complete = False  # `-e URL`: pip builds it at the build step


def _read_requirements_file(path: Path, reading: _Reading) -> None:
    """A requirements file's plain requirements; an editable line is left to the build step, any other option
    (an index, an include whose options would apply to the whole run, hashes) keeps everything behind."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        raise _Unknown from None
    for line in text.replace("\\\n", " ").splitlines():  # joined where a line goes on, as pip reads it
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.split()[0] in _EDITABLE:
            reading.complete = False
        elif line.startswith("-") or " -" in line:
            raise _Unknown
        else:
            reading.requirements.append(line)
            reading.complete &= not _direct_reference(line)


def _read_pyproject(path: Path, files: set[str], reading: _Reading) -> None:
    """pyproject.toml's `[project] dependencies`, and its build requirements, which go ahead only when its backend
    asks for no more and the dependencies are static (a `[project]` table without `dependencies` in `dynamic`)."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        raise _Unknown from None
    project, tool = _table(document, "project"), _table(document, "tool")
    build_system = (
        _table(document, "build-system") if "build-system" in document else {"requires": LEGACY_BUILD_REQUIRES}
    )
    backend = build_system.get("build-backend", _LEGACY_BACKEND)
    configured = _PLAIN_BACKENDS.get(backend) if isinstance(backend, str) else None
    if configured is not None and any(name in files or name.removeprefix("tool.") in tool for name in configured):
        if "tool.poetry" in configured:
            raise _Unknown  # its dependencies may name sources of their own
        configured = None
    declared = _strings(project, "dependencies")
    reading.requirements += declared
    requires = _strings(build_system, "requires")
    if requires and str(backend).startswith("setuptools"):  # before 70.1 it asks for wheel too, which pip installs
        requires.append("wheel")
    reading.build_requirements += requires
    reading.complete &= (
        bool(project)
        and "dependencies" not in _strings(project, "dynamic")
        and not any(_direct_reference(line) for line in declared)
        and configured is not None
        and "backend-path" not in build_system  # a backend of the project's own
    )


def _direct_reference(requirement: str) -> bool:
    """`name @ URL`, a URL or a path: pip prepares those again at the build step, whatever is installed."""
    return "@" in requirement or "://" in requirement or requirement.startswith((".", "/", "git+", "file:"))


def _table(document: dict[str, Any], key: str) -> dict[str, Any]:
    """A table of pyproject.toml; empty when it is not one."""
    table = document.get(key)
    return table if isinstance(table, dict) else {}


def _strings(table: dict[str, Any], key: str) -> list[str]:
    """The strings of a list in a pyproject.toml table; nothing from a malformed one (pip will say what is wrong)."""
    items = table.get(key)
    return [item for item in items if isinstance(item, str)] if isinstance(items, list) else []


def _requirements_file(lines: list[str]) -> bytes:
    unique = list(dict.fromkeys(lines))
    return ("\n".join(unique) + "\n").encode() if unique else b""
