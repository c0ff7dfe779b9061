"""`@function_tool`: a Python function as a tool that runs in-process, beside the sandboxed ones.

The model sees a name, a description and an input schema, exactly as for a pocket.json tool:
- the schema comes from the signature and type hints (pydantic), parameter descriptions from
  `Annotated[..., Field(description=...)]` or from a Google-style `Args:` section of the docstring;
- the description is the docstring (without its `Args:`/`Returns:` sections);
- a provider's token arrives as the keyword argument named like its environment variable
  (`SLACK_BOT_TOKEN: str` for `auth_provider="slack"`), and never appears in the schema.

Bodies are checked with the same JSON Schema validation as sandboxed tools (so the errors read the
same) by `Pocket`, which also resolves the token; `FunctionTool.run`/`arun` then convert the body to
Python values with pydantic, call the function and turn what happens into an `Invocation`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from runner.invocation import Invocation, Outcome
from runner.manifest import AuthSpec, ToolAnnotations, ToolSpec
from runner.schema import tool_name_pattern
from runner.structured import return_schema

_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Return|Yields|Raises|Examples?|Notes?)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s*\*{0,2}([A-Za-z_][A-Za-z0-9_]*)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


class _Body(BaseModel):
    """Base of the generated argument models: unknown keys are the body check's business, not pydantic's."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)


def _split_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) from a docstring with an optional Google-style Args section."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    description: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    indent: int | None = None  # of the parameter lines in the Args section
    for line in lines:
        heading = _SECTION.match(line)
        if heading:
            section = heading.group(1).lower()
            current = indent = None
            continue
        if section is None:
            description.append(line)
        elif section in ("args", "arguments", "parameters"):
            match = _ARG_LINE.match(line)
            depth = len(line) - len(line.lstrip())
            if match and (indent is None or depth <= indent):
                indent, current = depth, match.group(1)
                params[current] = match.group(2).strip()
            elif current and line.strip():
                params[current] = (params[current] + " " + line.strip()).strip()
    return "\n".join(description).strip(), params


def _strip_titles(node: Any) -> Any:
    """pydantic's `title` keywords are noise for a model; drop them (a property *named* title stays)."""
    if isinstance(node, dict):
        return {
            key: (
                {name: _strip_titles(sub) for name, sub in value.items()}
                if key in ("properties", "$defs", "definitions") and isinstance(value, dict)
                else _strip_titles(value)
            )
            for key, value in node.items()
            if not (key == "title" and isinstance(value, str))
        }
    if isinstance(node, list):
        return [_strip_titles(item) for item in node]
    return node


Annotations = ToolAnnotations | Mapping[str, bool]  # what `annotations=` takes


def _annotations(func: Callable[..., Any], given: Annotations | None) -> ToolAnnotations | None:
    """`annotations=` as MCP's hints: a ToolAnnotations, or a mapping by MCP name (`readOnlyHint`) or field name."""
    if given is None or isinstance(given, ToolAnnotations):
        return given
    if not isinstance(given, Mapping):
        raise TypeError(f"{_where(func)}: annotations must be a mapping such as {{'readOnlyHint': True}}")
    try:
        return ToolAnnotations.model_validate(given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        hints = ", ".join(f.alias or name for name, f in ToolAnnotations.model_fields.items())
        raise TypeError(f"{_where(func)}: bad annotations ({problems}); MCP's hints are {hints}") from None


class FunctionTool:
    """A Python function described as a tool. Calling it calls the function unchanged.

    Attributes mirror a `Manifest` where they mean the same: `name`, `tool` (the `ToolSpec` the model
    sees, with the outputSchema its return annotation gives), `auth` (an `AuthSpec` or None).
    `output_wrapped` says whether a result is `{"result": value}` in structured form (see runner.structured).
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        auth_provider: str | None = None,
        scopes: Iterable[str] = (),
        auth_handler: str | None = None,
        title: str | None = None,
        annotations: Annotations | None = None,
    ):
        if not callable(func):
            raise TypeError(f"function_tool needs a function, got {type(func).__name__}")
        self.func = func
        self.is_async = inspect.iscoroutinefunction(func)
        tool_name = name if name is not None else getattr(func, "__name__", "")
        if not isinstance(tool_name, str) or not tool_name_pattern().match(tool_name):
            raise ValueError(
                f"tool name {tool_name!r} is not a safe identifier: use letters, digits, `_` and `-`, "
                "at most 64 characters (agent frameworks reject anything else); pass name=... to choose one"
            )
        if isinstance(scopes, str):
            raise TypeError("scopes must be a list of strings, not one string")
        doc_description, param_docs = _split_docstring(inspect.getdoc(func))
        self.auth: AuthSpec | None = None
        self.token_parameters: frozenset[str] = frozenset()
        signature = _signature(func)
        accepts_any_keyword = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        if auth_provider is not None:
            from runner.auth.providers import token_variables
            from runner.errors import SettingsError

            self.auth = AuthSpec(auth_provider=auth_provider, auth_handler=auth_handler, scopes=tuple(scopes))
            try:
                variables = token_variables(auth_provider, auth_handler)
            except SettingsError as exc:  # an auth_handler the provider does not offer
                raise TypeError(f"{_where(func)}: {exc}") from None
            # Each variable of the credential the function takes is injected, never asked of the model (a key
            # pair's secret too); **kwargs takes them all.
            taken = set(variables) if accepts_any_keyword else set(variables) & set(signature.parameters)
            if not taken:
                wanted = f"no parameter {variables[0]}" if len(variables) == 1 else f"none of {', '.join(variables)}"
                raise TypeError(
                    f"{_where(func)} needs {auth_provider} credentials but has {wanted}: "
                    f"add `{variables[0]}: str` to receive the token (it is never shown to the model)"
                )
            self.token_parameters = frozenset(taken)
        elif scopes or auth_handler:
            raise TypeError("scopes and auth_handler need an auth_provider")
        self._accepts_any_keyword = accepts_any_keyword

        fields: dict[str, Any] = {}
        for parameter in signature.parameters.values():
            if parameter.name in self.token_parameters or parameter.kind in (
                parameter.VAR_KEYWORD,
                parameter.VAR_POSITIONAL,
            ):
                continue
            if parameter.kind is parameter.POSITIONAL_ONLY:
                raise TypeError(f"{_where(func)}: positional-only parameter {parameter.name!r} cannot come from a body")
            annotation = Any if parameter.annotation is inspect.Parameter.empty else parameter.annotation
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            if parameter.name in param_docs:
                default = Field(default, description=param_docs[parameter.name])
            fields[parameter.name] = (annotation, default)
        try:
            self.model: type[BaseModel] = create_model(f"{tool_name}_arguments", __base__=_Body, **fields)
            schema = self.model.model_json_schema()
        except Exception as exc:  # pydantic's errors on unsupported hints are long; keep the point
            raise TypeError(f"{_where(func)}: cannot build an input schema from its signature: {exc}") from None
        schema = _strip_titles(schema)
        schema.setdefault("properties", {})
        schema["additionalProperties"] = False
        self._fields = tuple(fields)
        output = return_schema(signature.return_annotation)
        self.output_wrapped = output is not None and output.wrapped
        self.tool = ToolSpec(
            name=tool_name,
            description=(description if description is not None else doc_description) or tool_name,
            inputSchema=schema,
            outputSchema=_strip_titles(output.schema) if output is not None else None,
            title=title,
            annotations=_annotations(func, annotations),
        )
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    @property
    def name(self) -> str:
        return self.tool.name

    @property
    def description(self) -> str:
        return self.tool.description

    @property
    def input_schema(self) -> dict[str, Any]:
        return self.tool.input_schema

    @property
    def where(self) -> str:
        """Where the function is defined, for messages: `module.qualname (file:line)`."""
        return _where(self.func)

    def arguments(self, body: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, Any] | list[str]:
        """The keyword arguments for a body already checked against the schema, or the pydantic problems."""
        try:
            model = self.model.model_validate(body)
        except ValidationError as exc:
            return [
                ("/" + "/".join(map(str, e["loc"])) if e["loc"] else "body") + ": " + e["msg"] for e in exc.errors()
            ]
        arguments = {name: getattr(model, name) for name in self._fields}
        if self._accepts_any_keyword:
            arguments.update(secrets)
        else:
            arguments.update({k: v for k, v in secrets.items() if k in self.token_parameters})
        return arguments

    def run(
        self,
        body: Mapping[str, Any],
        secrets: Mapping[str, str],
        *,
        timeout: float | None,
        workers: Callable[[], concurrent.futures.ThreadPoolExecutor],
        started: float,
    ) -> Invocation:
        """Call the function from sync code. With a timeout a sync function runs on a worker thread and
        is waited for that long; an async one runs on its own event loop and is cancelled at the limit."""
        arguments = self.arguments(body, secrets)
        if isinstance(arguments, list):
            return Invocation(self.name, Outcome.BAD_INPUT, error="invalid body: " + "; ".join(arguments))
        try:
            if self.is_async:
                coroutine = self._bounded(arguments, timeout)
                try:
                    asyncio.get_running_loop()
                except RuntimeError:
                    value = asyncio.run(coroutine)
                else:  # this thread already runs a loop: use another thread's
                    value = workers().submit(asyncio.run, coroutine).result()
            elif timeout is None:
                value = self.func(**arguments)
            else:
                future = workers().submit(self.func, **arguments)
                try:
                    value = future.result(timeout)
                except concurrent.futures.TimeoutError:
                    if not future.done():
                        raise _TimedOut from None
                    value = future.result()  # the function raised TimeoutError itself
        except _TimedOut:
            return self._timed_out(timeout, started)
        except Exception as exc:
            return self._failed(exc, started)
        return Invocation(self.name, Outcome.OK, value=_jsonable(value), duration_seconds=time.perf_counter() - started)

    async def arun(
        self,
        body: Mapping[str, Any],
        secrets: Mapping[str, str],
        *,
        timeout: float | None,
        workers: Callable[[], concurrent.futures.ThreadPoolExecutor],
        started: float,
    ) -> Invocation:
        """Call the function from async code: an async one on the running event loop, cancelled at the timeout;
        a sync one on a worker thread, waited for that long (the loop's own wait: no thread sits waiting)."""
        arguments = self.arguments(body, secrets)
        if isinstance(arguments, list):
            return Invocation(self.name, Outcome.BAD_INPUT, error="invalid body: " + "; ".join(arguments))
        try:
            if self.is_async:
                value = await self._bounded(arguments, timeout)
            else:
                value = await self._bounded_thread(arguments, timeout, workers())
        except _TimedOut:
            return self._timed_out(timeout, started)
        except Exception as exc:
            return self._failed(exc, started)
        return Invocation(self.name, Outcome.OK, value=_jsonable(value), duration_seconds=time.perf_counter() - started)

    async def _bounded(self, arguments: dict[str, Any], timeout: float | None) -> Any:
        try:
            return await asyncio.wait_for(self.func(**arguments), timeout)
        except TimeoutError:
            if timeout is None:  # raised by the function itself
                raise
            raise _TimedOut from None

    async def _bounded_thread(
        self, arguments: dict[str, Any], timeout: float | None, workers: concurrent.futures.ThreadPoolExecutor
    ) -> Any:
        future = workers.submit(self.func, **arguments)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            if timeout is None or (future.done() and not future.cancelled()):  # raised by the function itself
                raise
            raise _TimedOut from None

    def _failed(self, exc: Exception, started: float) -> Invocation:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Invocation(self.name, Outcome.TOOL_FAILED, error=message, duration_seconds=time.perf_counter() - started)

    def _timed_out(self, timeout: float | None, started: float) -> Invocation:
        note = "" if self.is_async else " (an in-process function cannot be stopped: it keeps running in its thread)"
        return Invocation(
            self.name,
            Outcome.TOOL_FAILED,
            error=f"timed out after {timeout:g} s{note}",
            duration_seconds=time.perf_counter() - started,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        auth = f", auth_provider={self.auth.provider!r}" if self.auth else ""
        return f"FunctionTool({self.name!r}{auth})"


class _TimedOut(Exception):
    pass


def _jsonable(value: Any) -> Any:
    """A function's return value as JSON data (pydantic models, dataclasses, dates...); else its str().
    NaN and infinities, which JSON cannot hold, become null (as JavaScript's JSON.stringify makes them)."""
    if value is None or isinstance(value, str | int | bool) or (isinstance(value, float) and math.isfinite(value)):
        return value
    from pydantic_core import to_jsonable_python

    try:
        return to_jsonable_python(value, inf_nan_mode="null")
    except Exception:
        return str(value)


def _signature(func: Callable[..., Any]) -> inspect.Signature:
    """The signature with string annotations (`from __future__ import annotations`) resolved."""
    try:
        return inspect.signature(func, eval_str=True)
    except NameError as exc:
        raise TypeError(
            f"{_where(func)}: a type hint cannot be resolved ({exc}); define the types it uses at module level"
        ) from None


def _where(func: Callable[..., Any]) -> str:
    name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
    code = getattr(func, "__code__", None)
    return f"{name} ({code.co_filename}:{code.co_firstlineno})" if code else name


@overload
def function_tool(func: Callable[..., Any], /) -> FunctionTool: ...
@overload
def function_tool(
    *,
    name: str | None = None,
    description: str | None = None,
    auth_provider: str | None = None,
    scopes: Iterable[str] = (),
    auth_handler: str | None = None,
    title: str | None = None,
    annotations: Annotations | None = None,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...
def function_tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    auth_provider: str | None = None,
    scopes: Iterable[str] = (),
    auth_handler: str | None = None,
    title: str | None = None,
    annotations: Annotations | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a function a tool: `@function_tool` or `@function_tool(auth_provider="slack", scopes=[...])`.

    `title` is a name for people; `annotations` are MCP's hints (`{"readOnlyHint": True}`). The return
    annotation, when pydantic can describe it, gives the tool its outputSchema.

    >>> @function_tool
    ... def add(a: int, b: int = 1) -> int:
    ...     '''Add two numbers.'''
    ...     return a + b
    >>> add.tool.input_schema["required"]
    ['a']
    """
    options = {
        "name": name,
        "description": description,
        "auth_provider": auth_provider,
        "scopes": scopes,
        "auth_handler": auth_handler,
        "title": title,
        "annotations": annotations,
    }
    if func is not None:
        return FunctionTool(func, **options)
    return lambda f: FunctionTool(f, **options)
