"""Helpers of the agent-facing tests (function tools, specs, adapters, MCP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.settings import Settings

HELLO = Path(__file__).resolve().parent.parent / "tools-example" / "hello"


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
