"""`Pocket`: the object agent code holds. Loads tools from their sources, then invokes them.

The data flows one way: sources -> manifests -> (body check, credentials) -> sandbox -> Invocation.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import AuthRequiredError, SourceError
from runner.invocation import Invocation, Outcome, body_problems
from runner.manifest import Manifest, load_manifest
from runner.settings import Settings, load_settings
from runner.sources import find_tool_folders

if TYPE_CHECKING:
    from runner.auth import Authenticator
    from runner.sandbox import Sandbox

ToolSource = str | Path
Progress = Callable[[str], None]


def load_tools(sources: Iterable[ToolSource], settings: Settings, progress: Progress | None = None) -> list[Manifest]:
    """Every tool the sources provide, validated. Duplicate names are an error naming both places."""
    manifests: dict[str, Manifest] = {}
    for source in sources:
        for folder in find_tool_folders(str(source), cache_dir=settings.cache_dir, progress=progress):
            manifest = load_manifest(folder.path)
            if manifest.name in manifests:
                raise SourceError(
                    f"two tools are named {manifest.name!r}: {manifests[manifest.name].path} and {manifest.path}; "
                    "tool names must be unique within one Pocket"
                )
            manifests[manifest.name] = manifest
    return list(manifests.values())


class Pocket:
    """A set of tools an agent may call.

    >>> with Pocket(tools=["tools-example/hello"]) as pocket:
    ...     pocket.invoke("hello", {"name": "Ada"}).value
    {'greeting': 'Hello, Ada!'}
    """

    def __init__(
        self,
        tools: Iterable[ToolSource],
        *,
        settings: Settings | None = None,
        progress: Progress | None = None,
    ):
        self.settings = settings if settings is not None else load_settings()
        self._progress = progress
        self._tools = {m.name: m for m in load_tools(tools, self.settings, progress)}
        self._sandbox: Sandbox | None = None
        self._authenticator: Authenticator | None = None
        self._auth_lock = threading.Lock()

    @property
    def tools(self) -> Mapping[str, Manifest]:
        return self._tools

    def invoke(
        self,
        tool_name: str,
        body: Any,
        *,
        user_id: str = "default",
        variables: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Invocation:
        """Run one tool with `body` and return what happened; never raises for the agent's mistakes."""
        started = time.perf_counter()
        manifest = self._tools.get(tool_name)
        if manifest is None:
            known = ", ".join(sorted(self._tools)) or "none"
            return Invocation(tool_name, Outcome.BAD_INPUT, error=f"unknown tool {tool_name!r} (known: {known})")
        problems = body_problems(manifest.tool.input_schema, body)
        if problems:
            return Invocation(tool_name, Outcome.BAD_INPUT, error="invalid body: " + "; ".join(problems))
        try:
            secrets = self._auth().environment(manifest.auth, user_id) if manifest.auth else {}
        except AuthRequiredError as exc:
            return Invocation(
                tool_name,
                Outcome.AUTH_REQUIRED,
                error=str(exc),
                auth_url=exc.url,
                duration_seconds=time.perf_counter() - started,
            )
        environment = {
            **manifest.variables,
            **self.settings.variables.get(tool_name, {}),
            **(variables or {}),
            **secrets,
        }
        result = self._sandbox_for_calls().run(manifest, body, environment, timeout=timeout)
        if secrets:
            from runner.auth.redact import redact_invocation

            result = redact_invocation(result, secrets.values())  # a token the tool printed never reaches the agent
        return result

    async def ainvoke(self, tool_name: str, body: Any, **options: Any) -> Invocation:
        """`invoke` on a worker thread, so the event loop never blocks and calls run in parallel."""
        return await asyncio.to_thread(self.invoke, tool_name, body, **options)

    def initialize_tool_auth(self, user_id: str = "default") -> dict[str, str]:
        """For every provider the loaded tools need and `user_id` has not authorized yet: the URL to show
        the person (an OAuth consent page, or the local form to enter a token). Empty when all is set."""
        return self._auth().initialize([m.auth for m in self._tools.values() if m.auth], user_id)

    def wait_tool_auth(self, timeout: float | None = None, user_id: str = "default") -> bool:
        """Wait until the person has answered every authorization started for `user_id`, or `timeout`
        passes. True when every one was granted."""
        outcome = self._auth().wait(timeout, user_id=user_id)
        return all(state == "authorized" for state in outcome.values())

    async def ainitialize_tool_auth(self, user_id: str = "default") -> dict[str, str]:
        return await asyncio.to_thread(self.initialize_tool_auth, user_id)

    async def await_tool_auth(self, timeout: float | None = None, user_id: str = "default") -> bool:
        return await asyncio.to_thread(self.wait_tool_auth, timeout, user_id)

    @property
    def authenticator(self) -> Authenticator:
        return self._auth()

    def _auth(self) -> Authenticator:
        with self._auth_lock:
            if self._authenticator is None:
                from runner.auth import Authenticator

                authenticator = Authenticator(self.settings)
                for manifest in self._tools.values():
                    if manifest.auth:  # consent asks for the union of the loaded tools' scopes
                        authenticator.require_scopes(manifest.auth.provider, manifest.auth.scopes)
                self._authenticator = authenticator
            return self._authenticator

    def _sandbox_for_calls(self) -> Sandbox:
        if self._sandbox is None:
            from runner.sandbox import Sandbox

            self._sandbox = Sandbox(self.settings, progress=self._progress)
        return self._sandbox

    def close(self) -> None:
        """Remove every container this Pocket started and stop its servers."""
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
        if self._authenticator is not None:
            self._authenticator.close()
            self._authenticator = None

    def __enter__(self) -> Pocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pocket(tools={sorted(self._tools)})"
