"""Structured output: a tool's `outputSchema` and the structured form of its results, checked against it.

A pocket.json tool declares `tool.outputSchema` and prints a JSON object matching it. A function tool's schema
comes from its return annotation (pydantic); MCP wants an object at the root (2025-11-25 allows nothing else),
so a function returning anything else (an `int`, a list, an optional model) has its value wrapped as
`{"result": value}`, as the MCP SDK's own server and fastmcp do.

A result that does not match its schema is not structured output: `structured_result` says why, so the caller
can report a broken contract instead of handing a client data its schema promises otherwise.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from runner.schema import body_problems

RESULT_KEY = "result"  # where a non-object return value goes in a wrapped schema


@dataclass(frozen=True)
class OutputSchema:
    """The JSON Schema of a function's results, and whether values are wrapped under RESULT_KEY."""

    schema: dict[str, Any]
    wrapped: bool


@dataclass(frozen=True)
class StructuredResult:
    """A result's structured content, or why it does not match the tool's outputSchema (`problems`)."""

    content: dict[str, Any] | None
    problems: tuple[str, ...] = ()


def return_schema(annotation: Any) -> OutputSchema | None:
    """The output schema of a function returning `annotation`, or None when it says nothing a client could use
    (no annotation, None, Any, or a type pydantic cannot describe: such a function simply has no outputSchema)."""
    if annotation in (inspect.Signature.empty, None, type(None), Any):
        return None
    from pydantic import TypeAdapter

    try:
        schema = TypeAdapter(annotation).json_schema(mode="serialization")
    except Exception:  # an arbitrary class: its values reach the client as text only
        return None
    if not schema:
        return None
    if schema.get("type") == "object":
        return OutputSchema(schema, wrapped=False)
    definitions = schema.pop("$defs", None)  # `$ref`s point at the root: keep the definitions there
    wrapper: dict[str, Any] = {"type": "object", "properties": {RESULT_KEY: schema}, "required": [RESULT_KEY]}
    if definitions:
        wrapper["$defs"] = definitions
    return OutputSchema(wrapper, wrapped=True)


def structured_result(output_schema: dict[str, Any], value: Any, *, wrapped: bool) -> StructuredResult:
    """`value` (a successful call's) as structured content checked against `output_schema`."""
    content = {RESULT_KEY: value} if wrapped else value
    problems = body_problems(output_schema, content, what="result")
    if problems:
        return StructuredResult(None, tuple(problems))
    return StructuredResult(content)
