"""`Pocket`: the object agent code holds. Loads tools from their sources, then invokes them.

The data flows one way: sources -> manifests -> (body check, credentials) -> sandbox -> Invocation.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
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
        self._calls: ThreadPoolExecutor | None = None

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
            **self.settings.variables.get(tool_name.lower(), {}),
            **(variables or {}),
            **secrets,
        }
        return self._sandbox_for_calls().run(manifest, body, environment, timeout=timeout, user_id=user_id)

    async def ainvoke(self, tool_name: str, body: Any, **options: Any) -> Invocation:
        """`invoke` on a worker thread, so the event loop never blocks and calls run in parallel."""
        # Our own threads: asyncio's default executor has only cpu_count + 4 of them (6 on 2 cores).
        if self._calls is None:
            self._calls = ThreadPoolExecutor(max_workers=32, thread_name_prefix="pocket-call")
        return await asyncio.get_running_loop().run_in_executor(
            self._calls, functools.partial(self.invoke, tool_name, body, **options)
        )

    def _auth(self) -> Authenticator:
        if self._authenticator is None:
            from runner.auth import Authenticator

            self._authenticator = Authenticator(self.settings)
        return self._authenticator

    def _sandbox_for_calls(self) -> Sandbox:
        if self._sandbox is None:
            from runner.sandbox import Sandbox

            self._sandbox = Sandbox(self.settings, progress=self._progress)
        return self._sandbox

    def close(self) -> None:
        """Remove every container this Pocket started and stop its servers."""
        if self._calls is not None:
            self._calls.shutdown(wait=True)
            self._calls = None
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
