"""Rebuilds of a `pip install .` tool: its declared dependencies are installed in a step of their own, before
its code is copied in, so an edit of the code alone reuses that step from the builder's cache."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from runner.manifest import load_manifest
from runner.sandbox import Sandbox
from runner.sandbox.context import BUILD_ENV, DEPS_STEP, _build_script, _deps_script, tool_files
from runner.sandbox.dependencies import Dependencies, python_dependencies
from runner.settings import SandboxSettings

docker = pytest.mark.docker

PYPROJECT = """
[project]
name = "{name}"
version = "0.1.0"
dependencies = ["six>=1.16,!=1.0.{nonce}"]  # a real dependency; the nonce: a step no earlier build cached
license = "MIT"  # PEP 639's form, which only setuptools >= 77 reads: pip's isolated build would have the newest

[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
"""  # setuptools finds the one module, greeter.py, by itself
# hyperpocket's tools have no [build-system]: pip builds them with setuptools (PEP 518's default)
HYPERPOCKET_PYPROJECT = PYPROJECT.split("[build-system]")[0]

CODE = """
import json, os, sys
import six
built_with = os.path.exists("/pocket-build-env")
print(json.dumps({{"greeting": "{greeting}", "six": six.__version__, "body": json.load(sys.stdin), "env": built_with}}))
"""


def _tool(folder: Path, name: str, greeting: str, pyproject: str = PYPROJECT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(pyproject.format(name=name, nonce=1))
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
@pytest.mark.parametrize("pyproject", [PYPROJECT, HYPERPOCKET_PYPROJECT], ids=["build-system", "no-build-system"])
def test_a_code_only_edit_reuses_the_installed_dependencies(docker_api, tmp_path, pyproject):
    name, nonce = "rebuilt", time.time_ns()
    folder = _tool(tmp_path / "tool", name, "first", pyproject)
    (folder / "pyproject.toml").write_text(pyproject.format(name=name, nonce=nonce))
    messages: list[str] = []
    with Sandbox(SandboxSettings(pool_size=0), progress=messages.append) as box:
        first = box.run(load_manifest(folder), {"n": 1}, {})
        assert first.ok, (first.error, messages[-20:])
        (folder / "greeter.py").write_text(CODE.format(greeting="second"))
        second = box.run(load_manifest(folder), {"n": 2}, {})
        assert second.ok, (second.error, messages[-20:])
        (folder / "pyproject.toml").write_text(pyproject.format(name=name, nonce=nonce).replace("1.16", "1.15"))
        third = box.run(load_manifest(folder), {"n": 3}, {})
        assert third.ok, (third.error, messages[-20:])
        tag = box.image(load_manifest(folder))
    docker_api.remove_image(tag)  # this test's: its containers are gone with the sandbox
    assert first.value["greeting"] == "first"
    assert first.value["env"] is False  # what built the tool is not in the image it runs in
    assert second.value == {**first.value, "greeting": "second", "body": {"n": 2}}
    ran = _steps(messages, DEPS_STEP)
    assert len(ran) == 3 and ran[0].startswith(" ---> Running in ")  # installed on the first build
    assert ran[1] == " ---> Using cache"  # the code changed: the dependencies are the ones installed before
    assert ran[2].startswith(" ---> Running in ")  # the dependencies changed: installed again
    assert third.value["six"] == first.value["six"]
    # the build requirements were installed ahead too (the newest: license = "MIT" was read): pip builds with
    # them, fetching nothing at every build
    assert not [m for m in messages if "Installing build dependencies" in m]


@docker
def test_dependencies_that_cannot_be_installed_ahead_are_installed_by_the_build_as_pip_would(docker_api, tmp_path):
    """A dependency in the tool's own folder is not there yet when the dependencies are installed ahead: that
    step fails, and the build step installs them as pip alone would, each project built in an isolated
    environment with its own build requirements (the vendored one's backend is flit, not setuptools, which
    also zips the files with their times from the image)."""
    folder = _tool(tmp_path / "tool", "vendoring", "first", HYPERPOCKET_PYPROJECT)
    pyproject = HYPERPOCKET_PYPROJECT.format(name="vendoring", nonce=time.time_ns())
    vendoring = pyproject.replace('dependencies = ["six', 'dependencies = ["vendored @ file:///tool/vendored", "six')
    (folder / "pyproject.toml").write_text(vendoring + '[tool.setuptools]\npy-modules = ["greeter"]\n')
    (folder / "vendored").mkdir()
    (folder / "vendored" / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core>=3.2,<4"]\nbuild-backend = "flit_core.buildapi"\n'
        '[project]\nname = "vendored"\nversion = "1.0"\ndescription = "vendored"\n'
    )
    (folder / "vendored" / "vendored.py").write_text("WORD = 'vendored'\n")
    (folder / "greeter.py").write_text(CODE.format(greeting="first").replace("import six", "import six, vendored"))
    messages: list[str] = []
    with Sandbox(SandboxSettings(pool_size=0), progress=messages.append) as box:
        result = box.run(load_manifest(folder), {"n": 1}, {})
        tag = box.image(load_manifest(folder))
    docker_api.remove_image(tag)
    assert result.ok, (result.error, messages[-20:])
    assert result.value["greeting"] == "first" and result.value["env"] is False
    assert any("pocket: installing the dependencies ahead failed; the build step installs them" in m for m in messages)
    assert any("Installing build dependencies" in m for m in messages)


@docker
def test_a_stale_build_folder_left_by_a_host_install_does_not_hide_the_edited_code(docker_api, tmp_path):
    """`pip install .` on the host leaves build/lib/ copies with the source's time; setuptools copies a source
    again only when it is newer, so the image must keep the files' times."""
    folder = _tool(tmp_path / "tool", "stale", "edited", PYPROJECT + '[tool.setuptools]\npy-modules = ["greeter"]\n')
    stale = folder / "build" / "lib" / "greeter.py"
    stale.parent.mkdir(parents=True)
    stale.write_text(CODE.format(greeting="stale"))
    os.utime(stale, (time.time() - 3600, time.time() - 3600))  # copied from the source an hour ago
    with Sandbox(SandboxSettings(pool_size=0)) as box:
        result = box.run(load_manifest(folder), {}, {})
        tag = box.image(load_manifest(folder))
    docker_api.remove_image(tag)
    assert result.ok, result.error
    assert result.value["greeting"] == "edited"


def test_the_dependencies_come_from_pyproject_and_requirements_files_named_by_the_build(tmp_path):
    folder = _tool(tmp_path / "t", "deps", "x")
    (folder / "requirements.txt").write_text("# pinned\nhttpx==0.27.0  # the client\n-e ./vendored\n\nsix>=1.16\n")
    manifest = load_manifest(folder)
    assert python_dependencies(manifest, tool_files(folder)) == Dependencies(
        b"six>=1.16,!=1.0.1\n",
        b"setuptools>=61\nwheel\n",  # which setuptools before 70.1 asks for too
    )
    document = json.loads((folder / "pocket.json").read_text())
    for build, expected in (
        ("pip install -r requirements.txt", Dependencies(b"httpx==0.27.0\nsix>=1.16\n", b"")),
        (  # its -e line is left to the build step: so are the build requirements (see the tests below)
            "python -m pip install -r requirements.txt && pip install .",
            Dependencies(b"httpx==0.27.0\nsix>=1.16\nsix>=1.16,!=1.0.1\n", b""),
        ),
        (
            "pip install --no-cache-dir -e . && playwright install",
            Dependencies(b"six>=1.16,!=1.0.1\n", b"setuptools>=61\nwheel\n"),
        ),
        ("pip install requests", None),  # a package the build names: left to it
        ("npm install", None),
        ("pip install -r missing.txt", None),
    ):
        document["entrypoint"]["build"] = build
        (folder / "pocket.json").write_text(json.dumps(document))
        assert python_dependencies(load_manifest(folder), tool_files(folder)) == expected, build


def test_a_pyproject_without_build_system_is_built_with_setuptools_installed_ahead(tmp_path):
    folder = _tool(tmp_path / "t", "legacy", "x", HYPERPOCKET_PYPROJECT)
    assert python_dependencies(load_manifest(folder), tool_files(folder)) == Dependencies(
        b"six>=1.16,!=1.0.1\n", b"setuptools>=40.8.0\nwheel\n"
    )


@pytest.mark.parametrize(
    "pyproject",
    [
        'project = "six"\nbuild-system = "setuptools"\n',
        '[project]\ndependencies = "six"\n[build-system]\nrequires = "setuptools"\n',  # strings, not lists
        "[project]\ndependencies = [1, 2]\n[build-system]\n",
        "[project\n",
    ],
    ids=["not-tables", "not-lists", "not-strings", "not-toml"],
)
def test_a_malformed_pyproject_installs_nothing_ahead(tmp_path, pyproject):
    folder = _tool(tmp_path / "t", "malformed", "x")
    (folder / "pyproject.toml").write_text(pyproject)  # pip, in the build step, says what is wrong with it
    assert python_dependencies(load_manifest(folder), tool_files(folder)) is None


def _read(tmp_path: Path, build: str, pyproject: str = PYPROJECT, files: dict[str, str] | None = None) -> Any:
    """What `build` installs ahead for a tool with `pyproject` and `files` (relative path: contents)."""
    folder = _tool(tmp_path / "t", "reading", "x", pyproject)
    for rel, text in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    document = json.loads((folder / "pocket.json").read_text())
    document["entrypoint"]["build"] = build
    (folder / "pocket.json").write_text(json.dumps(document))
    return python_dependencies(load_manifest(folder), tool_files(folder))


DECLARED = b"six>=1.16,!=1.0.1\n"
POETRY = PYPROJECT.replace('["setuptools>=61"]', '["poetry-core"]').replace(
    "setuptools.build_meta", "poetry.core.masonry.api"
)
HATCHLING = PYPROJECT.replace('["setuptools>=61"]', '["hatchling"]').replace("setuptools.build_meta", "hatchling.build")


def test_hyperpocket_builds_install_their_build_requirements_ahead(tmp_path):
    apt = "apt-get update && apt-get install -y libnss3 && pip install . && playwright install"
    for build, files in (
        ("pip install .", {}),
        (apt, {}),
        ("pip install -r requirements.txt && python -m pip install --no-cache-dir -e .", {"requirements.txt": "httpx"}),
    ):
        assert _read(tmp_path, build, HYPERPOCKET_PYPROJECT, files) == Dependencies(
            (b"httpx\n" if files else b"") + DECLARED, b"setuptools>=40.8.0\nwheel\n"
        ), build
    assert _read(tmp_path, "pip install .", HATCHLING) == Dependencies(DECLARED, b"hatchling\n")


@pytest.mark.parametrize(
    ("build", "pyproject", "files", "ahead"),
    [
        ("pip install .", PYPROJECT.replace('version = "0.1.0"', 'version = "0.1.0"\ndynamic = ["dependencies"]'), {},
         DECLARED),  # the build computes the dependencies
        ("pip install .", PYPROJECT.replace("six>=1.16", "six @ https://example.invalid/six.whl"), {},
         b"six @ https://example.invalid/six.whl,!=1.0.1\n"),  # pip prepares it again, whatever is installed
        ("pip install -r r.txt && pip install .", PYPROJECT, {"r.txt": "git+https://example.invalid/x#egg=x\n"},
         b"git+https://example.invalid/x#egg=x\n" + DECLARED),
        ("pip install -r r.txt && pip install .", PYPROJECT, {"r.txt": "-e ./vendored\nhttpx\n"},
         b"httpx\n" + DECLARED),
        ("pip install .", PYPROJECT, {"setup.py": "from setuptools import setup\nsetup()\n"},
         DECLARED),  # setup_requires
        ("pip install .", PYPROJECT.replace("setuptools.build_meta", "scikit_build_core.build"), {}, DECLARED),
        ("pip install .", HATCHLING + "[tool.hatch.build.hooks.vcs]\n", {}, DECLARED),  # its hooks' dependencies
        ("pip install .", HATCHLING, {"hatch.toml": "[build.hooks.vcs]\n"}, DECLARED),
        ("pip install .", PYPROJECT.replace('build-backend', 'backend-path = ["."]\nbuild-backend'), {}, DECLARED),
    ],
    ids=["dynamic", "url", "vcs-line", "editable-line", "setup-py", "other-backend", "hatch-hooks", "hatch-toml",
         "backend-path"],
)  # fmt: skip
def test_build_requirements_stay_behind_when_the_build_may_resolve_or_need_more(
    tmp_path, build, pyproject, files, ahead
):
    """On the build step's path, they would count as installed for what pip resolves there, and be left out of
    the image with them; nor does pip install what a backend asks for beyond them: the build step builds in
    isolation then, with the requirements that could go ahead installed."""
    assert _read(tmp_path, build, pyproject, files) == Dependencies(ahead, b"")


@pytest.mark.parametrize(
    ("build", "files"),
    [
        ("pip install . packaging", {}),  # a package named on the command line
        ("pip install --no-deps .", {}),  # the build would not install the dependencies
        ("pip install --target . -r r.txt", {"r.txt": "httpx\n"}),  # nor into the image's site-packages
        ("pip install -U --upgrade-strategy=eager .", {}),
        ("pip install --index-url https://mirror.invalid/simple .", {}),
        ("pip install --extra-index https://mirror.invalid/simple .", {}),  # pip takes an abbreviation too
        ("pip install -ihttps://mirror.invalid/simple .", {}),
        ("pip install -c c.txt -r r.txt", {"r.txt": "httpx\n", "c.txt": "httpx<1\n"}),
        ("pip install -rr.txt && pip install .", {"r.txt": "httpx\n"}),
        ("pip install -r r.txt", {"r.txt": "--extra-index-url https://mirror.invalid/simple\ninternal-lib\n"}),
        ("pip install -r r.txt", {"r.txt": "-r private.txt\ninternal-lib\n", "private.txt": "-i https://x/simple\n"}),
        ("pip install -r r.txt", {"r.txt": "six==1.16.0 \\\n    --hash=sha256:0000\n"}),  # hash-checking mode
        ("pip install -r missing.txt && pip install .", {}),
        ("pip install . && python3.11 -m pip install httpx", {}),  # a pip it does not read
        ("sh setup.sh && pip install .", {"setup.sh": "pip install httpx\n"}),  # which may run pip
        ("export PIP_INDEX_URL=https://mirror.invalid/simple && pip install .", {}),
        ("echo $(pip install packaging) && pip install .", {}),
        ("echo httpx > requirements.txt && pip install -r requirements.txt", {"requirements.txt": "six\n"}),
        ("cd sub && pip install .", {"sub/pyproject.toml": "[project]\nname = 'sub'\nversion = '1'\n"}),
        ("( cd sub && pip install . )", {"sub/pyproject.toml": "[project]\nname = 'sub'\nversion = '1'\n"}),
        ("pip install .", {"pyproject.toml": POETRY + "[tool.poetry.dependencies]\nsix = {git = 'https://x/six'}\n"}),
        ("pip install .", {"pyproject.toml": "x = " + "[" * 5000 + "]" * 5000 + "\n"}),
    ],
    ids=[
        "package", "no-deps", "target", "flag-value", "index", "abbreviated-index", "attached-index", "constraints",
        "attached-file", "index-in-file", "index-in-include", "hashes", "missing-file", "other-pip", "script",
        "environment", "substitution", "redirection", "cd", "subshell", "poetry-sources",
        "deep-toml",
    ],
)  # fmt: skip
def test_nothing_goes_ahead_when_the_build_may_install_otherwise(tmp_path, build, files):
    """Ahead, pip would install from the default index (an internal package's name taken from PyPI), without the
    hashes, what the build would not install, or another folder's requirements; or the reading is not sure."""
    assert _read(tmp_path, build, PYPROJECT, files) is None


def test_a_symlinked_requirements_file_is_not_read(tmp_path):
    outside = tmp_path / "host-secret.txt"
    outside.write_text("a-secret-from-the-host\n")
    folder = _tool(tmp_path / "t", "linked", "x")
    (folder / "requirements.txt").symlink_to(outside)
    document = json.loads((folder / "pocket.json").read_text())
    document["entrypoint"]["build"] = "pip install -r requirements.txt"
    (folder / "pocket.json").write_text(json.dumps(document))
    assert python_dependencies(load_manifest(folder), tool_files(folder)) is None  # its lines would be in the image


def test_the_build_step_uses_the_build_requirements_only_when_they_went_ahead():
    both = _deps_script(Dependencies(DECLARED, b"setuptools>=61\n"), ca=False).decode()
    assert f"pip install --target {BUILD_ENV} -r /pocket-deps/build-requirements.txt" in both
    assert f"rm -rf {BUILD_ENV}" in both.split('if [ "$ahead" = failed ]', 1)[1]  # either install failing drops it
    assert "--target" not in _deps_script(Dependencies(DECLARED, b""), ca=False).decode()
    with_env = _build_script("pip install .", ca=False, build_env=True).decode()
    assert f"if [ -d {BUILD_ENV} ]; then export PIP_NO_BUILD_ISOLATION=0" in with_env
    assert with_env.rstrip().endswith(f"rm -rf {BUILD_ENV}")  # after the build: the calls never see it
    assert "PIP_NO_BUILD_ISOLATION" not in _build_script("pip install .", ca=False).decode()


def test_a_pyproject_table_of_another_type_is_read_as_empty(tmp_path):
    pyproject = "tool = 5\n[project]\nname = 'x'\nversion = '1'\n[build-system]\nrequires = ['hatchling']\n"
    pyproject += "build-backend = 'hatchling.build'\n"  # pip says what is wrong with it, at the build step
    assert _read(tmp_path, "pip install .", PYPROJECT, {"pyproject.toml": pyproject}) == Dependencies(
        b"", b"hatchling\n"
    )
