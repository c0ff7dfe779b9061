"""Pocket as agent code uses it: what it refuses, and what it cleans up even when never closed."""

from __future__ import annotations

import datetime
import gc
import time

import pytest

from runner.errors import PocketError
from runner.invocation import Outcome
from runner.pocket import Pocket
from runner.settings import SandboxSettings, Settings
from tests.helpers import HELLO


@pytest.fixture
def settings(tmp_path):
    return Settings(cache_dir=tmp_path / "cache", data_dir=tmp_path / "data", sandbox=SandboxSettings(pool_size=1))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"name": datetime.date(2026, 1, 1)},
            "the body is not JSON data: Object of type date is not JSON serializable",
        ),
        ({"name": float("nan")}, "the body is not JSON data: Out of range float values are not JSON compliant"),
        ({"name": {1, 2}}, "the body is not JSON data: Object of type set is not JSON serializable"),
        ("Ada", "the body must be a JSON object, got a string"),
        ([1], "the body must be a JSON object, got an array"),
        (None, "the body must be a JSON object, got null"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_bad_input(settings, body, message):
    with Pocket(tools=[HELLO], settings=settings) as pocket:
        result = pocket.invoke("hello", body)
    assert result.outcome is Outcome.BAD_INPUT
    assert result.error == f"invalid body: {message}"


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "5"])
def test_a_timeout_must_be_a_positive_number(settings, timeout):
    with Pocket(tools=[HELLO], settings=settings) as pocket:
        result = pocket.invoke("hello", {"name": "Ada"}, timeout=timeout)
    assert result.outcome is Outcome.BAD_INPUT
    assert result.error.startswith("timeout must be a positive number")


def test_a_closed_pocket_says_so_instead_of_starting_containers_nobody_removes(settings):
    pocket = Pocket(tools=[HELLO], settings=settings)
    pocket.close()
    pocket.close()  # twice is fine
    with pytest.raises(PocketError, match="this Pocket is closed"):
        pocket.invoke("hello", {"name": "Ada"})
    assert pocket._sandbox is None


def test_the_same_source_twice_is_one_tool_not_a_duplicate(settings):
    with Pocket(tools=[HELLO, str(HELLO), HELLO.parent], settings=settings) as pocket:
        assert "hello" in pocket.tools


@pytest.mark.docker
def test_a_pocket_never_closed_removes_its_containers_when_collected(docker_api, settings):
    pocket = Pocket(tools=[HELLO], settings=settings)
    assert pocket.invoke("hello", {"name": "Ada"}).ok
    label = f"pocket-runner.sandbox={pocket.sandbox.id}"
    assert docker_api.containers(all=True, filters={"label": label})  # the pool's waiting container
    del pocket
    gc.collect()
    deadline = time.monotonic() + 10
    while docker_api.containers(all=True, filters={"label": label}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert docker_api.containers(all=True, filters={"label": label}) == []
