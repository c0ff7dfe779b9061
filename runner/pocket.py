"""`Pocket`: the object agent code holds. Loads tools from their sources, then invokes them.

The data flows one way: sources -> manifests -> (body check, credentials) -> sandbox -> Invocation.
Function tools (`@function_tool`) take the same path up to the credentials, then run in-process.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, overload

from runner import telemetry
from runner.errors import (
    AuthRequiredError,
    AuthUnavailableError,
    DatabaseUnavailableError,
    PocketError,
    SettingsError,
    SourceError,
)
from runner.invocation import Cancellation, Invocation, Outcome, redact
from runner.progress import ProgressLines

# pydantic (manifests, settings, function tools), asyncio and concurrent.futures are imported where first used:
# `from runner import Pocket` stays fast.
if TYPE_CHECKING:
    import concurrent.futures

    from runner.audit import AuditRecord, AuditWriter, Surface
    from runner.auth import Authenticator
    from runner.function_tools import FunctionTool
    from runner.manifest import Manifest
    from runner.sandbox import Sandbox
    from runner.settings import Settings
    from runner.specs import ToolResult

ToolSource = str | Path
# What `Pocket(tools=[...])` takes: a source, a function tool (or a plain function), or a source with
# variables for every tool it provides: `("./tools", {"REGION": "eu"})`.
ToolEntry: TypeAlias = "ToolSource | FunctionTool | Callable[..., Any] | tuple[ToolSource, Mapping[str, str]]"
Tool: TypeAlias = "Manifest | FunctionTool"
Progress = Callable[[str], None]

# What every call uses, imported once by the first Pocket (`_import_call_path`): not with this module, which would
# slow `from runner import Pocket`, nor in each call, where an import statement costs ~30 us once the call follows
# an idle second (a warm call's whole budget is under a millisecond).
_FunctionTool: type[FunctionTool]
_body_problems: Callable[[dict[str, Any], Any], list[str]]
_record_of: Callable[..., AuditRecord]
_surface: Callable[[], Surface | None]
_PYTHON: Surface


def _import_call_path() -> None:
    global _FunctionTool, _body_problems, _record_of, _surface, _PYTHON
    from runner.audit import Surface, record_of, surface
    from runner.function_tools import FunctionTool
    from runner.schema import body_problems

    _FunctionTool, _body_problems, _record_of, _surface, _PYTHON = (
        FunctionTool, body_problems, record_of, surface, Surface.PYTHON
    )  # fmt: skip


def _load_origins(
    source: ToolSource, settings: Settings, progress: Progress | None
) -> list[tuple[Manifest, tuple[str, str | None]]]:
    """Each tool of `source` with where it came from: (the source, its resolved git commit or None)."""
    from runner.manifest import load_manifest
    from runner.sources import find_tool_folders

    folders = find_tool_folders(str(source), cache_dir=settings.cache_dir, progress=progress)
    return [(load_manifest(folder.path), (folder.source, folder.commit)) for folder in folders]


def provider_hosts(settings: Settings, provider: str) -> tuple[str, ...]:
    """The API hosts of `provider` (its catalog entry with `[auth.NAME]` applied): where its tools may connect
    by default; none for a provider nobody knows (its calls fail at the credential lookup anyway)."""
    from runner.auth.providers import configured

    try:
        entry = configured(settings, provider)
    except SettingsError:
        return ()
    return entry.api_hosts if entry is not None else ()


def _called_from(call_format: str) -> contextlib.AbstractContextManager[None]:
    """A model's tool call: from the OpenAI or Anthropic helpers, unless a surface around them said already."""
    from runner.audit import Surface, called_from, surface

    if surface() is not None:
        return contextlib.nullcontext()
    return called_from(Surface.ANTHROPIC if call_format == "anthropic" else Surface.OPENAI)


def _place(tool: Tool) -> str:
    from runner.manifest import Manifest

    return str(tool.path) if isinstance(tool, Manifest) else f"function {tool.where}"


def _add(tools: dict[str, Tool], tool: Tool) -> None:
    """Add one tool; a second tool of the same name is an error naming both places (the same one twice is not)."""
    from runner.manifest import Manifest

    existing = tools.get(tool.name)
    if existing is tool or (
        isinstance(existing, Manifest) and isinstance(tool, Manifest) and existing.path == tool.path
    ):
        return
    if tool.name in tools:
        raise SourceError(
            f"two tools are named {tool.name!r}: {_place(tools[tool.name])} and {_place(tool)}; "
            "tool names must be unique within one Pocket"
        )
    tools[tool.name] = tool


def load_tools(sources: Iterable[ToolSource], settings: Settings, progress: Progress | None = None) -> list[Manifest]:
    """Every tool the sources provide, validated. Duplicate names are an error naming both places."""
    manifests: dict[str, Tool] = {}
    for source in sources:
        for manifest, _ in _load_origins(source, settings, progress):
            _add(manifests, manifest)
    return list(manifests.values())  # type: ignore[arg-type]


class Pocket:
    """A set of tools an agent may call.

    >>> with Pocket(tools=["tools-example/hello"]) as pocket:
    ...     pocket.invoke("hello", {"name": "Ada"}).value
    {'greeting': 'Hello, Ada!'}
    """

    def __init__(
        self,
        tools: Iterable[ToolEntry],
        *,
        settings: Settings | None = None,
        progress: Progress | None = None,
    ):
        from runner.settings import load_settings

        _import_call_path()
        if isinstance(tools, str | Path | _FunctionTool):
            raise TypeError("tools must be a list, e.g. Pocket(tools=[...])")
        self.settings = settings if settings is not None else load_settings()
        self._progress = ProgressLines(progress)
        self._tools: dict[str, Tool] = {}
        self._variables: dict[str, dict[str, str]] = {}  # per tool, from ("source", {...}) entries
        self._origins: dict[str, tuple[str, str | None]] = {}  # per tool: its source and resolved commit
        self._audit: AuditWriter | None = None
        for entry in tools:
            self._load(entry)
        self._sandbox: Sandbox | None = None
        self._authenticator: Authenticator | None = None
        self._lock = threading.Lock()  # concurrent first calls create one sandbox, one authenticator, one pool
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None
        self._closed = False

    def _load(self, entry: Any) -> None:
        from runner.function_tools import FunctionTool, function_tool

        variables: Mapping[str, str] | None = None
        if isinstance(entry, tuple):
            if len(entry) != 2 or not isinstance(entry[0], str | Path) or not isinstance(entry[1], Mapping):
                raise TypeError(f"a tool entry tuple must be (source, {{'VARIABLE': 'value'}}), got {entry!r}")
            entry, variables = entry
            bad = [k for k, v in variables.items() if not isinstance(k, str) or not isinstance(v, str)]
            if bad:
                raise TypeError(f"variables of {entry} must map names to strings; not so for {bad}")
        if isinstance(entry, str | Path):
            for manifest, origin in _load_origins(entry, self.settings, self._progress):
                _add(self._tools, manifest)
                self._origins[manifest.name] = origin
                if variables:
                    self._variables[manifest.name] = dict(variables)
        elif isinstance(entry, FunctionTool):
            _add(self._tools, entry)
        elif callable(entry):
            _add(self._tools, function_tool(entry))
        else:
            raise TypeError(
                f"cannot load a tool from {type(entry).__name__}: give a path, a git URL, a @function_tool, "
                "or (source, {'VARIABLE': 'value'})"
            )

    @property
    def tools(self) -> Mapping[str, Tool]:
        """Every tool by name: a `Manifest` for sandboxed tools, a `FunctionTool` for in-process ones.

        Both have `.name`, `.tool` (the `ToolSpec`: name, description, input schema) and `.auth`.
        """
        return self._tools

    @property
    def progress(self) -> ProgressLines:
        """What this Pocket says as it works (image builds, git fetches): `progress` given to it, and listeners
        added with `pocket.progress.listening(callback)` (the MCP server's, turning lines into notifications)."""
        return self._progress

    def prepare(self, *tool_names: str, user_id: str = "default", warm_workers: int = 0) -> None:
        """Make the body checks of tools (all, or those named), build the images of sandboxed ones and start their
        pools now, so the first calls wait for no compile, build or container start; with `warm_workers`, that
        many warm containers of each warm-mode tool serve `user_id` already. Raises PocketError for an unknown
        name or a failed build.
        """
        from runner.schema import prepare_body_check

        for name in tool_names or list(self._tools):
            tool = self._tools.get(name)
            if tool is None:
                raise PocketError(f"unknown tool {name!r} (known: {', '.join(sorted(self._tools)) or 'none'})")
            prepare_body_check(tool.tool.input_schema)
            if not isinstance(tool, _FunctionTool):  # a function needs nothing more ahead
                self._sandbox_for_calls().prepare(tool, user_id=user_id, warm_workers=warm_workers)

    def tool_specs(self, format: str = "openai", *, strict: bool = False) -> list[dict[str, Any]]:
        """Every tool as the given API takes it: "openai" (Chat Completions), "openai-responses", "anthropic".

        With `strict`, OpenAI and Anthropic specs ask for strict schema adherence; every schema must allow it
        (ValueError naming what does not).
        """
        from runner.specs import tool_specs

        return tool_specs(self._tools.values(), format, strict=strict)

    @overload
    def invoke(
        self,
        tool_name: str,
        body: Any = None,
        *,
        user_id: str = "default",
        variables: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Invocation: ...
    @overload
    def invoke(
        self,
        tool_name: Mapping[str, Any] | Any,
        body: None = None,
        *,
        user_id: str = "default",
        variables: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> ToolResult: ...
    def invoke(
        self,
        tool_name: Any,
        body: Any = None,
        *,
        user_id: str = "default",
        variables: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run one tool with `body` and return what happened; never raises for the agent's mistakes.

        `tool_name` is a tool name (returns an `Invocation`), or an OpenAI tool call, an OpenAI Responses
        function call or an Anthropic tool-use block, as a dict or an SDK object: then the body is in
        the call, and the result is the matching tool-result message (a dict whose `.invocation` is
        the `Invocation`).
        """
        if isinstance(tool_name, str):
            return self._invoke(tool_name, body, user_id=user_id, variables=variables, timeout=timeout)
        call = self._tool_call(tool_name, body)
        with _called_from(call.format):
            if call.problem is not None:
                return call.result(self._refused(call.name, call.problem, user_id))
            return call.result(
                self._invoke(call.name, call.arguments, user_id=user_id, variables=variables, timeout=timeout)
            )

    @overload
    async def ainvoke(
        self,
        tool_name: str,
        body: Any = None,
        *,
        user_id: str = "default",
        variables: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Invocation: ...
    @overload
    async def ainvoke(
        self,
        tool_name: Mapping[str, Any] | Any,
        body: None = None,
        *,
        user_id: str = "default",
        variables: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> ToolResult: ...
    async def ainvoke(
        self,
        tool_name: Any,
        body: Any = None,
        *,
        user_id: str = "default",
        variables: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """`invoke` without blocking the event loop: calls run in parallel.

        Async function tools run on the loop itself; everything else on a worker thread. Cancelling the await
        stops the call: a sandboxed tool's container is killed.
        """
        options = {"user_id": user_id, "variables": variables, "timeout": timeout}
        if isinstance(tool_name, str):
            return await self._ainvoke(tool_name, body, **options)
        call = self._tool_call(tool_name, body)
        with _called_from(call.format):
            if call.problem is not None:
                return call.result(self._refused(call.name, call.problem, user_id))
            return call.result(await self._ainvoke(call.name, call.arguments, **options))

    def tool_results(self, response: Any, **options: Any) -> list[dict[str, Any]]:
        """Run every tool call in a model response; return the messages to append to the conversation.

        `response` is an OpenAI ChatCompletion (or its message), a Responses response, or an Anthropic
        Message, as SDK objects or dicts. Options are `invoke`'s. No tool calls: an empty list.
        """
        from runner.specs import answer_messages, tool_calls

        calls = tool_calls(response)
        return answer_messages(calls, [self.invoke(call, **options) for call in calls])

    async def atool_results(self, response: Any, **options: Any) -> list[dict[str, Any]]:
        """`tool_results`, with the calls run concurrently."""
        import asyncio

        from runner.specs import answer_messages, tool_calls

        calls = tool_calls(response)
        return answer_messages(calls, list(await asyncio.gather(*(self.ainvoke(c, **options) for c in calls))))

    @staticmethod
    def _tool_call(tool: Any, body: Any) -> Any:
        from runner.specs import parse_tool_call

        if body is not None:
            raise TypeError("give either a tool name and a body, or a tool call (whose arguments are the body)")
        return parse_tool_call(tool)

    def _prepare(
        self, tool_name: str, body: Any, user_id: str, timeout: float | None
    ) -> Invocation | tuple[Tool, dict[str, str], list[str]]:
        """The tool, its credentials' variables and the values of them to redact from its result (a username is
        shown, a token never), or the Invocation saying why the call cannot run."""
        self._check_open()
        started = time.perf_counter()
        if timeout is not None and not (isinstance(timeout, int | float) and 0 < timeout < math.inf):
            return Invocation(tool_name, Outcome.BAD_INPUT, error=f"timeout must be a positive number, not {timeout!r}")
        tool = self._tools.get(tool_name)
        if tool is None:
            known = ", ".join(sorted(self._tools)) or "none"
            return Invocation(tool_name, Outcome.BAD_INPUT, error=f"unknown tool {tool_name!r} (known: {known})")
        with telemetry.span("pocket.body_check", {"gen_ai.tool.name": tool_name}):
            problems = _body_problems(tool.tool.input_schema, body)
        if problems:
            return Invocation(tool_name, Outcome.BAD_INPUT, error="invalid body: " + "; ".join(problems))
        if tool.auth is None:
            return tool, {}, []
        try:
            with telemetry.span("pocket.credentials", {"pocket.auth.provider": tool.auth.provider, "user.id": user_id}):
                secrets = self._auth().environment(tool.auth, user_id)
            return tool, secrets, self._auth().secret_values(tool.auth, secrets)
        except (AuthUnavailableError, DatabaseUnavailableError) as exc:  # the provider or the store is down: a
            return Invocation(  # later call may succeed (no consent or setting would help)
                tool_name, Outcome.TOOL_FAILED, error=str(exc), duration_seconds=time.perf_counter() - started
            )
        except SettingsError as exc:  # an unknown provider or handler: the configuration must change
            return Invocation(tool_name, Outcome.BAD_INPUT, error=str(exc))
        except AuthRequiredError as exc:
            return Invocation(
                tool_name,
                Outcome.AUTH_REQUIRED,
                error=str(exc),
                auth_url=exc.url,
                duration_seconds=time.perf_counter() - started,
            )

    def _invoke(
        self,
        tool_name: str,
        body: Any,
        *,
        user_id: str = "default",
        variables: Mapping[str, str] | None = None,
        timeout: float | None = None,
        cancellation: Cancellation | None = None,
    ) -> Invocation:
        self._check_open()  # a call on a closed Pocket is refused before it is a call (no span, no record)
        sandboxed = tool_name in self._tools and not isinstance(self._tools[tool_name], _FunctionTool)
        sandbox = self._sandbox_for_calls() if sandboxed else None
        busy = sandbox.busy() if sandbox is not None else contextlib.nullcontext()
        with busy, self._observed(tool_name, body, user_id) as finish:
            started = time.perf_counter()
            prepared = self._prepare(tool_name, body, user_id, timeout)
            if isinstance(prepared, Invocation):
                return finish(prepared)
            tool, secrets, hidden = prepared
            if sandbox is None:  # a function tool
                result = tool.run(body, secrets, timeout=timeout, workers=self._workers, started=started)
            else:
                environment = {
                    **tool.variables,
                    **self.settings.variables.get(tool_name.lower(), {}),
                    **self._variables.get(tool_name, {}),
                    **(variables or {}),
                    **secrets,
                }
                result = sandbox.run(
                    tool, body, environment, timeout=timeout, user_id=user_id, cancellation=cancellation
                )
            return finish(redact(result, hidden))

    async def _ainvoke(self, tool_name: str, body: Any, **options: Any) -> Invocation:
        import asyncio

        self._check_open()
        tool = self._tools.get(tool_name)
        loop = asyncio.get_running_loop()
        if not isinstance(tool, _FunctionTool):
            cancellation = Cancellation()
            call = functools.partial(self._invoke, tool_name, body, cancellation=cancellation, **options)
            try:  # in the caller's context: its trace, and the surface it calls from
                return await loop.run_in_executor(self._workers(), contextvars.copy_context().run, call)
            except asyncio.CancelledError:  # the agent stopped waiting: so does the tool, in its container
                cancellation.cancel()
                raise
        with self._observed(tool_name, body, options["user_id"]) as finish:
            started = time.perf_counter()
            if tool.auth is None:  # nothing that may block: stay on the loop
                prepared = self._prepare(tool_name, body, options["user_id"], options["timeout"])
            else:  # fetching or refreshing a token may do I/O
                prepare = functools.partial(self._prepare, tool_name, body, options["user_id"], options["timeout"])
                prepared = await loop.run_in_executor(self._workers(), contextvars.copy_context().run, prepare)
            if isinstance(prepared, Invocation):
                return finish(prepared)
            _, secrets, hidden = prepared
            result = await tool.arun(body, secrets, timeout=options["timeout"], workers=self._workers, started=started)
            return finish(redact(result, hidden))

    def _refused(self, tool_name: str, problem: str, user_id: str) -> Invocation:
        """The invocation of a tool call that cannot run (its arguments are not JSON), recorded like any other."""
        with self._observed(tool_name, None, user_id) as finish:
            return finish(Invocation(tool_name, Outcome.BAD_INPUT, error=problem))

    @contextlib.contextmanager
    def _observed(self, tool_name: str, body: Any, user_id: str) -> Iterator[Callable[[Invocation], Invocation]]:
        """Around one call: its span; `finish(invocation)` puts the outcome on the span and writes the audit
        record (a record that cannot be written is a warning: the tool has run, its result must not be lost)."""
        telemetry.configure()
        at, started = time.time(), time.perf_counter()
        tool = self._tools.get(tool_name)
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool_name, "user.id": user_id}
        with telemetry.span(f"execute_tool {tool_name}", attributes) as current:

            def finish(invocation: Invocation) -> Invocation:
                finished.append(invocation)
                if self.settings.audit.enabled or current.is_recording():  # else nobody keeps the record
                    origin = self._origins.get(tool_name) or (
                        (f"function {tool.where}", None) if isinstance(tool, _FunctionTool) else (None, None)
                    )
                    record = _record_of(
                        invocation, at=at, duration=time.perf_counter() - started, user=user_id, body=body,
                        surface=_surface() or _PYTHON,
                        backend=self._backend(tool), origin=origin, auth=tool.auth if tool else None,
                        trace_id=telemetry.trace_id(),
                    )  # fmt: skip
                    if current.is_recording():
                        telemetry.annotate(current, record.span_attributes())
                    self._write_audit(record)
                if not invocation.ok:
                    telemetry.failed(current, invocation.outcome.value)
                return invocation

            finished: list[Invocation] = []
            try:
                yield finish
            except BaseException as exc:  # cancelled, or interrupted: still a call to account for
                if not finished:
                    finish(Invocation(tool_name, Outcome.TOOL_FAILED, error=f"interrupted ({type(exc).__name__})"))
                raise

    def _backend(self, tool: Tool | None) -> str:
        """Where the call ran, for the audit record: "function", "docker/RUNTIME" or "kubernetes[/RUNTIME CLASS]"."""
        if tool is None:
            return "none"
        return "function" if isinstance(tool, _FunctionTool) else self._sandbox_backend

    @functools.cached_property
    def _sandbox_backend(self) -> str:
        from runner.settings import Backend

        sandbox = self.settings.sandbox
        if sandbox.backend is Backend.KUBERNETES:
            runtime_class = sandbox.kubernetes.runtime_class_name
            return f"kubernetes/{runtime_class}" if runtime_class else "kubernetes"
        return f"docker/{sandbox.runtime.value}"

    def _write_audit(self, record: Any) -> None:
        if not self.settings.audit.enabled:
            return
        try:
            writer = self._audit or self._open_audit()  # once open, handed over without the lock or an import
            if writer is not None:
                writer.submit(record)  # written here, now, if close() closed it meanwhile
                return
            from runner.audit import audit_log

            log = audit_log(self.settings)  # a call that outlived close(): its record is written here, now
            try:
                log.write(record)
            finally:
                log.close()
        except (PocketError, OSError) as exc:
            import warnings

            warnings.warn(f"the audit record of this {record.tool} call was not written: {exc}", stacklevel=4)

    def _open_audit(self) -> AuditWriter | None:
        """The writer of this Pocket's audit records, opened by the first call; None once closed."""
        from runner.audit import AuditWriter, audit_log

        with self._lock:
            if self._audit is None and not self._closed:
                self._audit = AuditWriter(audit_log(self.settings))
            return self._audit

    def _workers(self) -> concurrent.futures.ThreadPoolExecutor:
        """Threads for `ainvoke` calls and bounded function tools: our own, since asyncio's default
        executor has only cpu_count + 4 of them (6 on 2 cores), too few for concurrent calls."""
        import concurrent.futures

        with self._lock:
            self._check_open()
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="pocket-call")
            return self._executor

    def initialize_tool_auth(self, user_id: str = "default") -> dict[str, str]:
        """For every provider the loaded tools need and `user_id` has not authorized yet: the URL to show
        the person (an OAuth consent page, or the local form to enter a token). Empty when all is set."""
        return self._auth().initialize([t.auth for t in self._tools.values() if t.auth], user_id)

    def wait_tool_auth(self, timeout: float | None = None, user_id: str = "default") -> bool:
        """Wait until the person has answered every authorization started for `user_id`, or `timeout`
        passes. True when every one was granted."""
        outcome = self._auth().wait(timeout, user_id=user_id)
        return all(state == "authorized" for state in outcome.values())

    async def ainitialize_tool_auth(self, user_id: str = "default") -> dict[str, str]:
        import asyncio

        return await asyncio.to_thread(self.initialize_tool_auth, user_id)

    async def await_tool_auth(self, timeout: float | None = None, user_id: str = "default") -> bool:
        import asyncio

        return await asyncio.to_thread(self.wait_tool_auth, timeout, user_id)

    @property
    def authenticator(self) -> Authenticator:
        return self._auth()

    def _auth(self) -> Authenticator:
        with self._lock:
            self._check_open()
            if self._authenticator is None:
                from runner.auth import Authenticator

                authenticator = Authenticator(self.settings)
                for tool in self._tools.values():
                    if tool.auth:  # consent asks for the union of the loaded tools' scopes
                        authenticator.require_scopes(tool.auth.provider, tool.auth.scopes)
                self._authenticator = authenticator
            return self._authenticator

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox that runs this Pocket's tools, created on first use: its `id` is on the label of every
        container it starts (`pocket-runner.sandbox=ID`), `containers()` lists the ones it has now."""
        return self._sandbox_for_calls()

    def _sandbox_for_calls(self) -> Sandbox:
        sandbox = self._sandbox  # once there, a call takes it without the lock
        if sandbox is not None and not self._closed:
            return sandbox
        with self._lock:
            self._check_open()  # a call already under way when close() ran must not start a new sandbox
            if self._sandbox is None:
                from runner.sandbox import Sandbox

                settings = self.settings  # not self: the finalizer below must not keep this Pocket alive
                hosts = functools.cache(lambda name: provider_hosts(settings, name))  # settings do not change
                self._sandbox = Sandbox(settings, progress=self._progress, provider_hosts=hosts)
                # A Pocket never closed still removes its containers: when collected, or at interpreter exit.
                self._finalizer = weakref.finalize(self, self._sandbox.close)
            return self._sandbox

    def _check_open(self) -> None:
        if self._closed:
            raise PocketError("this Pocket is closed: create a new one (or use it inside `with Pocket(...)`)")

    def close(self) -> None:
        """Remove every container this Pocket started and stop its servers."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            sandbox, self._sandbox = self._sandbox, None
            authenticator, self._authenticator = self._authenticator, None
            finalizer, self._finalizer = self._finalizer, None
            audit, self._audit = self._audit, None
        if audit is not None:
            audit.close()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        try:
            if finalizer is not None:
                finalizer.detach()
            if sandbox is not None:
                sandbox.close()
        finally:  # the callback server stops even if removing containers failed
            if authenticator is not None:
                authenticator.close()

    def __enter__(self) -> Pocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pocket(tools={sorted(self._tools)})"
