"""Shared fixtures. Each area keeps its own fixtures in a `fixtures_*.py` plugin module."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import HELLO, NO_DAEMON, Ran

pytest_plugins = [
    "tests.fixtures_git",
    "tests.fixtures_docker",
    "tests.fixtures_oauth",
    "tests.fixtures_postgres",
]


@pytest.fixture
def hello_dir() -> Path:
    return HELLO


@pytest.fixture
def cli(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Ran]:
    """`cli("list", SOURCE, stdin=TEXT, cwd=DIR)`: the `pocket` command run in this process by
    `runner.cli.main(argv)`, without POCKET_* variables (and the local pocket process off), with `stdin` as its
    standard input (default: empty) and `cwd` as its working folder. Returns the exit code (main's return value,
    or the code argparse exits with for --help, --version and usage errors) and what it wrote to stdout and stderr.
    """
    from runner.cli import main

    for name in list(os.environ):
        if name.startswith("POCKET_"):
            monkeypatch.delenv(name)
    for name, value in NO_DAEMON.items():
        monkeypatch.setenv(name, value)

    def run(*args: str, stdin: str | None = None, cwd: Path | None = None) -> Ran:
        capfd.readouterr()  # what came before is not this command's output
        with monkeypatch.context() as patch:
            if cwd is not None:
                patch.chdir(cwd)
            # as Python opens a real stdin on POSIX: UTF-8 here, lines split at "\n" only (a "\r" stays)
            patch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((stdin or "").encode()), "utf-8", newline="\n"))
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse
                code = exc.code
        out, err = capfd.readouterr()
        return Ran(0 if code is None else int(code), out, err)

    return run
