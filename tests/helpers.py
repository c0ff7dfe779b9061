"""What several test modules share, defined once: paths, the hyperpocket corpus, manifests, ports, settings,
and the `pocket` console script run as a real process. Fixtures live in conftest.py and the fixtures_* plugins.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runner.settings import Settings

REPO = Path(__file__).resolve().parent.parent
HELLO = REPO / "tools-example" / "hello"
TOOLS = REPO / "tests" / "tools"

# The 82 published hyperpocket manifests, kept outside the repository in ../shared (not in a fresh clone).
CORPUS = REPO.parent / "shared" / "corpus" / "hyperpocket"
NO_CORPUS = f"../shared/corpus/hyperpocket is not beside this checkout (looked for {CORPUS})"


def require_corpus() -> Path:
    """The corpus folder; skips the calling test, saying why, when it is not beside this checkout."""
    if not CORPUS.is_dir():
        pytest.skip(NO_CORPUS)
    return CORPUS


def corpus_folders() -> list[Any]:
    """For `parametrize`: every corpus folder holding a pocket.json, or one skipped case saying why."""
    if not CORPUS.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=NO_CORPUS), id="no-corpus")]
    return sorted(p.parent for p in CORPUS.rglob("pocket.json"))


VALID = {
    "tool": {
        "name": "echo",
        "description": "Echo the body.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
    "language": "python",
    "entrypoint": {"run": "cat"},
}


def write(folder: Path, document: Any) -> Path:
    """`folder/pocket.json` holding `document` (JSON-encoded unless it is already text)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = document if isinstance(document, str) else json.dumps(document)
    (folder / "pocket.json").write_text(text)
    return folder


def free_port() -> int:
    """A port nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen[Any], timeout: float = 10) -> bool:
    """Whether `process` listens on 127.0.0.1:`port` within `timeout` seconds (False as soon as it exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def settings(tmp_path: Path, **values: Any) -> Settings:
    """Settings in tmp_path: the cache, the credential store, and the real Authenticator's callback server on a
    free loopback port (never the default 8400, which another test or program may hold)."""
    values.setdefault("credentials", {"callback_port": 0})
    return Settings(cache_dir=tmp_path / "cache", data_dir=tmp_path / "data", **values)


def enter_token(url: str, token: str) -> None:
    """What a person does with the URL of an `auth_required` result for a token provider: open the local form,
    paste the token, submit."""
    import httpx

    with httpx.Client(timeout=10) as browser:
        page = browser.get(url)
        assert page.status_code == 200, page.text
        state = page.text.split("name='state' value='")[1].split("'")[0]
        done = browser.post(url.split("?")[0], data={"state": state, "token": token})
        assert done.status_code == 200 and "is connected" in done.text, done.text


@dataclass(frozen=True)
class Ran:
    """What a `pocket` command run in-process did (the `cli` fixture), named like subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str


POCKET = str(Path(sys.executable).parent / "pocket")


# `pocket invoke` runs its call itself in tests, unless a test turns the local pocket process on (test_daemon.py).
NO_DAEMON = {"POCKET_CLI__DAEMON": "false"}


def environment() -> dict[str, str]:
    """This process's environment without POCKET_* settings, for a `pocket` process (no local pocket process)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("POCKET_")} | NO_DAEMON


def pocket(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The console script run as a real process (for signals, pipes and exit codes; else use the `cli` fixture)."""
    return subprocess.run(
        [POCKET, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=environment(),
        check=False,
    )
