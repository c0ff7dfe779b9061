"""Helpers of the agent-facing tests (function tools, specs, adapters, MCP)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from runner.errors import AuthRequiredError
from runner.settings import Settings

HELLO = Path(__file__).resolve().parent.parent / "tools-example" / "hello"
SANDBOX_AVAILABLE = importlib.util.find_spec("runner.sandbox") is not None
NO_SANDBOX_REASON = "runner.sandbox is not on this branch yet (it lands with the sandbox branch)"


def require_docker(request: Any) -> None:
    """Use the sandbox tests' `docker_api` fixture where it exists: it fails loudly without an engine or
    base image, and skips only with POCKET_TESTS_NO_DOCKER=1."""
    import pytest

    try:
        request.getfixturevalue("docker_api")
    except pytest.FixtureLookupError:
        pass


def settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(cache_dir=tmp_path / "cache", data_dir=tmp_path / "data", **values)


class FakeAuthenticator:
    """The Authenticator interface (`environment(spec, user_id)`, `close()`), with tokens per (provider, user)."""

    def __init__(self, tokens: dict[tuple[str, str], str], url: str = "https://auth.example/authorize?state=s"):
        self.tokens = tokens
        self.url = url
        self.calls: list[tuple[str, str]] = []

    def environment(self, spec: Any, user_id: str) -> dict[str, str]:
        from runner.auth import token_variable

        self.calls.append((spec.provider, user_id))
        token = self.tokens.get((spec.provider, user_id))
        if token is None:
            raise AuthRequiredError(
                f"{spec.provider} authorization is needed: open {self.url}", provider=spec.provider, url=self.url
            )
        return {token_variable(spec.provider): token}

    def close(self) -> None:
        pass


def with_auth(pocket: Any, authenticator: FakeAuthenticator) -> Any:
    pocket._auth = lambda: authenticator
    return pocket
