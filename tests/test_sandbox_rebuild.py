"""Rebuilds of a `pip install .` tool: its declared dependencies are installed in a step of their own, before
its code is copied in, so an edit of the code alone reuses that step from the builder's cache."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runner.manifest import load_manifest
from runner.sandbox import Sandbox
from runner.sandbox.context import DEPS_STEP, Dependencies, python_dependencies, tool_files
from runner.settings import SandboxSettings

docker = pytest.mark.docker

PYPROJECT = """
[project]
name = "{name}"
version = "0.1.0"
dependencies = ["six>=1.16,!=1.0.{nonce}"]  # a real dependency; the nonce: a step no earlier build cached

[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
"""  # setuptools finds the one module, greeter.py, by itself

CODE = """
import json, sys
import six
print(json.dumps({{"greeting": "{greeting}", "six": six.__version__, "body": json.load(sys.stdin)}}))
"""


def _tool(folder: Path, name: str, greeting: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(PYPROJECT.format(name=name, nonce=1))
    (folder / "greeter.py").write_text(CODE.format(greeting=greeting))
    (folder / "pocket.json").write_text(json.dumps({
        "tool": {"name": name, "description": "greets", "inputSchema": {"type": "object"}},
        "language": "python", "entrypoint": {"build": "pip install .", "run": "cd / && python -m greeter"},
    }))  # fmt: skip
    return folder


def _steps(messages: list[str], step: str) -> list[str]:
    """What the builder said right after each time it reached `step`: ' ---> Using cache' or ' ---> Running in ...'."""
    lines = [m.split(": ", 1)[1] for m in messages if m.startswith("build ")]
    return [lines[i + 1] for i, line in enumerate(lines[:-1]) if line.endswith(f" : {step}")]


@docker
def test_a_code_only_edit_reuses_the_installed_dependencies(docker_api, tmp_path):
    name, nonce = "rebuilt", time.time_ns()
    folder = _tool(tmp_path / "tool", name, "first")
    (folder / "pyproject.toml").write_text(PYPROJECT.format(name=name, nonce=nonce))
    messages: list[str] = []
    with Sandbox(SandboxSettings(pool_size=0), progress=messages.append) as box:
        first = box.run(load_manifest(folder), {"n": 1}, {})
        assert first.ok, (first.error, messages[-20:])
        (folder / "greeter.py").write_text(CODE.format(greeting="second"))
        second = box.run(load_manifest(folder), {"n": 2}, {})
        assert second.ok, (second.error, messages[-20:])
        (folder / "pyproject.toml").write_text(PYPROJECT.format(name=name, nonce=nonce).replace("1.16", "1.15"))
        third = box.run(load_manifest(folder), {"n": 3}, {})
        assert third.ok, (third.error, messages[-20:])
        tag = box.image(load_manifest(folder))
    docker_api.remove_image(tag)  # this test's: its containers are gone with the sandbox
    assert first.value["greeting"] == "first"
    assert second.value == {**first.value, "greeting": "second", "body": {"n": 2}}
    ran = _steps(messages, DEPS_STEP)
    assert len(ran) == 3 and ran[0].startswith(" ---> Running in ")  # installed on the first build
    assert ran[1] == " ---> Using cache"  # the code changed: the dependencies are the ones installed before
    assert ran[2].startswith(" ---> Running in ")  # the dependencies changed: installed again
    assert third.value["six"] == first.value["six"]


def test_the_dependencies_come_from_pyproject_and_requirements_files_named_by_the_build(tmp_path):
    folder = _tool(tmp_path / "t", "deps", "x")
    (folder / "requirements.txt").write_text("# pinned\nhttpx==0.27.0  # the client\n-e ./vendored\n\nsix>=1.16\n")
    manifest = load_manifest(folder)
    assert python_dependencies(manifest, tool_files(folder)) == Dependencies(
        b"six>=1.16,!=1.0.1\nsetuptools>=61\n", True
    )
    document = json.loads((folder / "pocket.json").read_text())
    for build, expected in (
        ("pip install -r requirements.txt", Dependencies(b"httpx==0.27.0\nsix>=1.16\n", False)),
        (
            "python -m pip install -r requirements.txt && pip install .",
            Dependencies(b"httpx==0.27.0\nsix>=1.16\nsix>=1.16,!=1.0.1\nsetuptools>=61\n", True),
        ),
        ("pip install requests", None),  # nothing the folder declares: no step ahead
        ("npm install", None),
        ("pip install -r missing.txt", None),
    ):
        document["entrypoint"]["build"] = build
        (folder / "pocket.json").write_text(json.dumps(document))
        assert python_dependencies(load_manifest(folder), tool_files(folder)) == expected, build
