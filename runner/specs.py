"""Tools in the shapes the model APIs take, and tool calls from those APIs back into invocations.

Three APIs, one conversion each way:

- `openai` (Chat Completions): spec `{"type": "function", "function": {name, description, parameters}}`;
  a `message.tool_calls[i]` is answered by `{"role": "tool", "tool_call_id", "content"}`.
- `openai-responses`: spec `{"type": "function", name, description, parameters, strict}`; a
  `function_call` output item is answered by `{"type": "function_call_output", "call_id", "output"}`.
- `anthropic`: spec `{name, description, input_schema}`; a `tool_use` content block is answered by
  `{"type": "tool_result", "tool_use_id", "content", "is_error"?}`.

Calls may be dicts or the SDKs' pydantic objects (anything with `model_dump()`); the SDKs are never
imported here. An Anthropic `tool_result` is a content block: the agent puts the blocks answering one
assistant turn into a single `{"role": "user", "content": [...]}` message, as the API requires.

OpenAI's strict mode accepts a subset of JSON Schema (every object closed with `additionalProperties:
false` and listing every property in `required`, and only some keywords); `strict_problems` says
what keeps a schema out of it, and specs claim strict only when asked and possible.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from runner.invocation import Invocation, Outcome
from runner.manifest import ToolSpec


class SpecFormat(StrEnum):
    OPENAI = "openai"  # Chat Completions
    OPENAI_RESPONSES = "openai-responses"
    ANTHROPIC = "anthropic"


_ALIASES = {
    "openai-chat": SpecFormat.OPENAI,
    "chat-completions": SpecFormat.OPENAI,
    "responses": SpecFormat.OPENAI_RESPONSES,
}

# Keywords OpenAI documents as supported in strict mode; anything else keeps a schema non-strict.
_STRICT_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf",
        "$ref", "$defs", "definitions", "description", "title", "pattern", "format", "multipleOf",
        "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "minItems", "maxItems",
    }
)  # fmt: skip
_SCHEMA_MAPS = ("properties", "$defs", "definitions")


class HasToolSpec(Protocol):
    @property
    def tool(self) -> ToolSpec: ...


def spec_format(format: str) -> SpecFormat:
    try:
        return _ALIASES.get(format) or SpecFormat(format)
    except ValueError:
        choices = ", ".join(f.value for f in SpecFormat)
        raise ValueError(f"unknown tool spec format {format!r}: use one of {choices}") from None


def api_input_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The input schema as the APIs want it at the top: an object with `properties`. `$schema` goes (OpenAI
    rejects some dialect URIs; the APIs read JSON Schema regardless)."""
    result = {key: value for key, value in schema.items() if key != "$schema"}
    result.setdefault("type", "object")
    result.setdefault("properties", {})
    return result


def strict_problems(schema: Mapping[str, Any]) -> list[str]:
    """Why OpenAI's strict mode would reject `schema` (empty when it would accept it)."""
    problems: list[str] = []

    def walk(node: Any, where: str) -> None:
        if not isinstance(node, dict):
            return
        for key in node:
            if key not in _STRICT_KEYWORDS and key != "default":
                problems.append(f"{where or '/'}: keyword {key!r} is not supported in strict mode")
        if "default" in node:
            problems.append(f"{where or '/'}: 'default' is not supported in strict mode (every field is required)")
        types = node.get("type")
        is_object = types == "object" or (isinstance(types, list) and "object" in types) or "properties" in node
        if is_object:
            if node.get("additionalProperties") is not False:
                problems.append(
                    f"{where or '/'}: objects need additionalProperties: false (for a pydantic model of a function "
                    "tool: model_config = ConfigDict(extra='forbid'))"
                )
            missing = sorted(set(node.get("properties", {})) - set(node.get("required", [])))
            if missing:
                problems.append(f"{where or '/'}: every property must be required; not so for {', '.join(missing)}")
        for key in _SCHEMA_MAPS:
            for name, sub in (node.get(key) or {}).items():
                walk(sub, f"{where}/{key}/{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}/items")
        for index, sub in enumerate(node.get("anyOf") or []):
            walk(sub, f"{where}/anyOf/{index}")

    if "anyOf" in schema:
        problems.append("/: the top level may not be anyOf")
    walk(api_input_schema(schema), "")
    return problems


def tool_spec(spec: ToolSpec, format: str | SpecFormat = SpecFormat.OPENAI, *, strict: bool = False) -> dict[str, Any]:
    """One tool as `format`'s API takes it."""
    kind = spec_format(format)
    schema = api_input_schema(spec.input_schema)
    if strict:
        problems = strict_problems(spec.input_schema)
        if problems:
            raise ValueError(f"tool {spec.name!r} cannot be strict: " + "; ".join(problems))
    if kind is SpecFormat.ANTHROPIC:
        anthropic = {"name": spec.name, "description": spec.description, "input_schema": schema}
        return {**anthropic, "strict": True} if strict else anthropic
    if kind is SpecFormat.OPENAI_RESPONSES:
        # Responses defaults `strict` to true when it is left out: always say which one is meant.
        return {
            "type": "function",
            "name": spec.name,
            "description": spec.description,
            "parameters": schema,
            "strict": strict,
        }
    function: dict[str, Any] = {"name": spec.name, "description": spec.description, "parameters": schema}
    if strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def tool_specs(
    tools: Iterable[HasToolSpec | ToolSpec], format: str | SpecFormat = SpecFormat.OPENAI, *, strict: bool = False
) -> list[dict[str, Any]]:
    """Every tool as `format`'s API takes it (a `Manifest`, a `FunctionTool` or a bare `ToolSpec`)."""
    kind = spec_format(format)
    specs = [t if isinstance(t, ToolSpec) else t.tool for t in tools]
    if strict:
        problems = [f"{s.name}: {'; '.join(p)}" for s in specs if (p := strict_problems(s.input_schema))]
        if problems:
            raise ValueError("these tools cannot be strict: " + " | ".join(problems))
    return [tool_spec(s, kind, strict=strict) for s in specs]


class ToolResult(dict):  # type: ignore[type-arg]
    """A tool-result message (a plain dict for the SDKs), with the `Invocation` behind it."""

    invocation: Invocation

    def __init__(self, message: dict[str, Any], invocation: Invocation):
        super().__init__(message)
        self.invocation = invocation


@dataclass(frozen=True)
class ToolCall:
    """A tool call from a model, in any of the three APIs' shapes, read into what an invocation needs."""

    format: SpecFormat
    id: str
    name: str
    arguments: Any  # the body: a dict when the call is well formed
    problem: str | None = None  # why the call cannot become an invocation (arguments that are not JSON)

    def result(self, invocation: Invocation) -> ToolResult:
        """The message that answers this call with `invocation`'s text."""
        text = invocation.text()
        if self.format is SpecFormat.ANTHROPIC:
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": self.id, "content": text}
            if invocation.outcome is not Outcome.OK:
                block["is_error"] = True
            return ToolResult(block, invocation)
        if self.format is SpecFormat.OPENAI_RESPONSES:
            return ToolResult({"type": "function_call_output", "call_id": self.id, "output": text}, invocation)
        return ToolResult({"role": "tool", "tool_call_id": self.id, "content": text}, invocation)


def _as_dict(call: Any) -> dict[str, Any]:
    if isinstance(call, Mapping):
        return dict(call)
    dump = getattr(call, "model_dump", None)
    if callable(dump):
        return dump()
    raise TypeError(
        f"not a tool call: {type(call).__name__}; expected an OpenAI tool call, an OpenAI Responses function "
        "call or an Anthropic tool_use block (a dict or an SDK object)"
    )


def _json_arguments(text: Any) -> tuple[Any, str | None]:
    if isinstance(text, Mapping):  # some OpenAI-compatible servers send an object
        return dict(text), None
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}, None
    try:
        return json.loads(text), None
    except (TypeError, ValueError) as exc:
        return None, f"the tool call's arguments are not valid JSON: {exc}"
    except RecursionError:
        return None, "the tool call's arguments are nested too deeply to read"


def parse_tool_call(call: Any) -> ToolCall:
    """Read an OpenAI tool call, an OpenAI Responses `function_call` or an Anthropic `tool_use` block.

    Raises TypeError for anything else (a bug in the agent loop, not the model's mistake).
    """
    if isinstance(call, ToolCall):
        return call
    data = _as_dict(call)
    kind = data.get("type")
    if kind == "tool_use":
        arguments = data.get("input")
        return ToolCall(SpecFormat.ANTHROPIC, str(data.get("id") or ""), str(data.get("name") or ""), arguments)
    if kind == "function_call":
        arguments, problem = _json_arguments(data.get("arguments"))
        call_id = str(data.get("call_id") or data.get("id") or "")
        return ToolCall(SpecFormat.OPENAI_RESPONSES, call_id, str(data.get("name", "")), arguments, problem)
    function = data.get("function")
    if isinstance(function, Mapping) and kind in (None, "function"):
        arguments, problem = _json_arguments(function.get("arguments"))
        name = str(function.get("name") or "")
        return ToolCall(SpecFormat.OPENAI, str(data.get("id") or ""), name, arguments, problem)
    raise TypeError(
        f"not a tool call (type {kind!r}, keys {sorted(data)}); expected an OpenAI tool call, an OpenAI Responses "
        "function_call or an Anthropic tool_use block"
    )


def answer_messages(calls: list[ToolCall], results: list[ToolResult]) -> list[dict[str, Any]]:
    """What to append to the conversation after answering `calls`: one message per OpenAI call or Responses
    item; for Anthropic, one user message holding every tool_result block (the API wants them together)."""
    if calls and calls[0].format is SpecFormat.ANTHROPIC:
        return [{"role": "user", "content": list(results)}]
    return list(results)


def tool_calls(response: Any) -> list[ToolCall]:
    """Every tool call in a model response: an OpenAI ChatCompletion (or its message), a Responses
    response (or its `output` list), or an Anthropic Message (or its `content` list); dicts or SDK objects.
    OpenAI `custom` tool calls are left out: Pocket's tools are function tools, so those are the agent's own."""
    data = response if isinstance(response, list) else _as_dict(response)
    if isinstance(data, dict):
        if "choices" in data:  # ChatCompletion: the first choice's message
            data = data["choices"][0]["message"] if data["choices"] else {}
        if isinstance(data, dict) and "tool_calls" in data:
            data = data.get("tool_calls") or []
        elif isinstance(data, dict) and "output" in data:
            data = data["output"]
        elif isinstance(data, dict) and "content" in data and isinstance(data["content"], list):
            data = data["content"]
        else:
            data = []
    calls = []
    for item in data:
        item = _as_dict(item)
        if item.get("type") in ("tool_use", "function_call") or "function" in item:
            calls.append(parse_tool_call(item))
    return calls
