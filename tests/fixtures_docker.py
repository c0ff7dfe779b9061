"""Fixtures for tests that need the real Docker engine.

A missing engine or base image fails these tests loudly: a silent skip would hide a broken CI.
Set POCKET_TESTS_NO_DOCKER=1 to skip them on purpose (a machine without Docker).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import HELLO, TOOLS


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "docker: needs the Docker engine (fails without it unless POCKET_TESTS_NO_DOCKER=1)"
    )


@pytest.fixture(scope="session")
def docker_api() -> Iterator[object]:
    """The low-level docker client; fails (never skips) when there is no engine, unless told to skip."""
    if os.environ.get("POCKET_TESTS_NO_DOCKER") == "1":
        pytest.skip("POCKET_TESTS_NO_DOCKER=1")
    import docker

    from runner.settings import SandboxSettings

    try:
        api = docker.APIClient(version="auto")
        api.ping()
    except Exception as exc:
        pytest.fail(f"the Docker engine is not reachable ({exc}); start dockerd or set POCKET_TESTS_NO_DOCKER=1")
    base = SandboxSettings().python_image
    try:
        api.inspect_image(base)
    except docker.errors.ImageNotFound:
        pytest.fail(f"the base image {base} is missing; build it first (see scripts/ or the README)")
    yield api
    api.close()


@pytest.fixture(scope="session", params=["runc", "runsc"])
def runtime(request: pytest.FixtureRequest, docker_api: Any) -> str:
    """Each runtime the hostile-tool tests run under: runc, and gVisor's runsc (`scripts/setup.sh --gvisor`,
    which `--test` includes). A missing runsc fails, unless POCKET_TESTS_NO_GVISOR=1 says to skip it."""
    if request.param == "runsc":
        if os.environ.get("POCKET_TESTS_NO_GVISOR") == "1":
            pytest.skip("POCKET_TESTS_NO_GVISOR=1")
        if "runsc" not in (docker_api.info().get("Runtimes") or {}):
            pytest.fail("the Docker engine has no runtime runsc: run `bash scripts/setup.sh --gvisor`")
    return request.param


@pytest.fixture(scope="session")
def sandbox(runtime: str) -> Iterator[object]:
    """One sandbox per runtime for the whole session (images are built once), with a pool of one container
    per tool."""
    from runner.sandbox import Sandbox
    from runner.settings import SandboxSettings

    box = Sandbox(SandboxSettings(pool_size=1, runtime=runtime))
    yield box
    box.close()


@pytest.fixture(scope="session")
def tool():
    """`tool("name")` -> the validated Manifest of tests/tools/name (or `hello` from tools-example)."""
    from runner.manifest import load_manifest

    def load(name: str):
        return load_manifest(HELLO if name == "hello" else TOOLS / name)

    return load


@pytest.fixture
def tool_copy(tmp_path: Path):
    """`tool_copy("name")` -> a writable copy of a test tool's folder, for tests that edit it."""

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(HELLO if name == "hello" else TOOLS / name, target)
        return target

    return copy


def running_containers(docker_api: Any, filters: dict[str, Any], count: int = 1, timeout: float = 20) -> list[dict]:
    """The running containers matching `filters` once there are at least `count` (or what runs at the timeout)."""
    deadline = time.monotonic() + timeout
    while len(found := docker_api.containers(filters=filters)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def wait_for_processes(docker_api: Any, filters: dict[str, Any], word: str, count: int, timeout: float = 20) -> None:
    """Until `count` running containers matching `filters` each run a process whose command holds `word` (the
    tool itself has started, not only its container)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = 0
        for container in docker_api.containers(filters=filters):
            commands = b""
            with contextlib.suppress(Exception):  # gone meanwhile
                # read inside (`docker top` under runsc shows no process of the sandbox)
                run = docker_api.exec_create(container["Id"], ["/bin/sh", "-c", "cat /proc/[0-9]*/cmdline"])
                commands = docker_api.exec_start(run["Id"])
            running += word.encode() in commands
        if running >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} containers running {word!r} not seen in {timeout} s")
