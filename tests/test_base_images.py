"""The golang and node base images scripts/setup.sh makes (hyperpocket's `baseImage: golang`, `language: node`),
against the real engine: a Go tool and a node tool build and run; a Go module that needs a registry fails its
build with an error naming the build command and its exit code."""

from __future__ import annotations

import pytest

from runner.invocation import Outcome
from runner.settings import SandboxSettings

docker = pytest.mark.docker


@pytest.fixture(scope="module")
def base_images(docker_api) -> None:
    """Fails (never skips) when an image is missing: a silent skip would hide a broken setup."""
    import docker.errors

    for image, made_for in (("golang", "baseImage: golang"), (SandboxSettings().node_image, "language: node")):
        try:
            docker_api.inspect_image(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"the base image {image} ({made_for}) is missing; run scripts/setup.sh, which builds it")


@docker
def test_a_go_tool_builds_with_go_build_and_runs(sandbox, tool, base_images):
    manifest = tool("goadder")
    assert manifest.base_image == "golang" and manifest.entrypoint.build == "go build -o adder ."
    result = sandbox.run(manifest, {"a": 2, "b": 40}, {})
    assert result.ok, result
    assert result.value["sum"] == 42
    assert result.value["go"].startswith("go1.")
    assert sandbox.run(manifest, {"a": -5, "b": 3}, {}).value["sum"] == -2  # the built binary, called again


@docker
def test_a_node_tool_builds_with_npm_install_and_runs(sandbox, tool, base_images, docker_api):
    manifest = tool("nodetool")
    assert manifest.language == "node" and manifest.base_image is None
    result = sandbox.run(manifest, {"name": "Ada"}, {})
    assert result.ok, result
    assert result.value["body"] == {"name": "Ada"}
    assert result.value["node"].startswith("v")
    # What `npm install` did at build time (its postinstall script, its lockfile) is in the image.
    assert result.value["installed"] == "npm install ran" and result.value["lockfile"] is True
    node_image = docker_api.inspect_image(SandboxSettings().node_image)["Id"]  # sandbox.node_image, by default
    assert node_image in {layer["Id"] for layer in docker_api.history(sandbox.image(manifest))}


@docker
def test_a_go_module_needing_a_registry_fails_its_build_clearly(sandbox, tool, base_images):
    """The module `go build` must download is on no registry this machine reaches (nor any other: it does not
    exist); the user sees which command failed with which code, and go's own words naming the module."""
    result = sandbox.run(tool("gomissingmod"), {}, {})
    assert result.outcome is Outcome.TOOL_FAILED
    headline, _, log = result.error.partition("\n--- build log (tail) ---\n")
    assert headline == (
        "building the image of tool 'gomissingmod' failed: entrypoint.build ('go build -o app .') exited with code 1"
    )
    assert "github.com/pocket-runner/no-such-module" in log
    assert "pocket-build" not in result.error and "\x1b[" not in result.error
