"""Shared fixtures. Each area keeps its own fixtures in a `fixtures_*.py` plugin module."""

import pytest

pytest_plugins = [
    "tests.fixtures_git",
    "tests.fixtures_docker",
    "tests.fixtures_oauth",
]


@pytest.fixture
def hello_dir():
    from tests.helpers import HELLO

    return HELLO
