"""Every use of JSON Schema: the published schemas, manifest validation, tool input schemas and body checks.

One module, so the rules a manifest is held to and the rules a body is checked with cannot drift apart,
and the tool-name pattern is written once (in `schemas/pocket.schema.json`). jsonschema is imported only
when a check runs, so importing the runner stays fast.
"""

from __future__ import annotations

import json
import re
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from runner.errors import Problem

_DATA_KEYWORDS = {"enum", "const", "default", "examples"}  # values here are data, not schemas


def schemas_dir() -> Path:
    """The published schemas: inside the installed package, or at the repository root in a checkout."""
    packaged = Path(__file__).resolve().parent / "schemas"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "schemas"


@cache
def load_schema(name: str) -> dict[str, Any]:
    """One of the published schemas, such as `pocket.schema.json`, parsed."""
    return json.loads((schemas_dir() / name).read_text(encoding="utf-8"))


@cache
def tool_name_pattern() -> re.Pattern[str]:
    """What a tool name must match, read from the manifest schema so a function tool obeys the same rule."""
    return re.compile(load_schema("pocket.schema.json")["properties"]["tool"]["properties"]["name"]["pattern"])


def manifest_schema() -> dict[str, Any]:
    return load_schema("pocket.schema.json")


@cache
def _manifest_validator() -> Any:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    pocket, auth = load_schema("pocket.schema.json"), load_schema("auth.schema.json")
    registry = Registry().with_resources((schema["$id"], Resource.from_contents(schema)) for schema in (pocket, auth))
    return Draft202012Validator(pocket, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def pointer(path: Any) -> str:
    """A path of keys and indexes as a JSON pointer (`/tool/name`)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _describe(error: Any) -> str:
    """A schema error in words a manifest author understands."""
    if error.validator == "anyOf" and not error.path and "language" in str(error.validator_value):
        return "the manifest needs `language` (python or node) or `baseImage`"
    if error.validator == "pattern" and error.path and error.path[-1] == "name":
        return (
            f"tool name {error.instance!r} is not a safe identifier: use letters, digits, `_` and `-`, "
            "at most 64 characters (agent frameworks reject anything else)"
        )
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown key(s)")
    return error.message


def manifest_problems(file: str, document: Any) -> list[Problem]:
    """Where `document` breaks the published manifest schema, in document order."""
    errors = sorted(_manifest_validator().iter_errors(document), key=lambda e: (list(map(str, e.path)), e.message))
    return [Problem(file, pointer(e.absolute_path), _describe(e)) for e in errors]


def input_schema_problems(file: str, schema: Any) -> list[Problem]:
    """`tool.inputSchema` must itself be a valid JSON Schema (checked against its own dialect's metaschema)
    whose every `$ref` resolves inside it (nothing is ever fetched)."""
    if not isinstance(schema, dict):
        return []  # already reported by the manifest schema
    from jsonschema.validators import Draft202012Validator, validator_for

    cls = validator_for(schema, default=Draft202012Validator)
    problems = [
        Problem(file, "/tool/inputSchema" + pointer(e.absolute_path), f"not a valid JSON Schema: {e.message}")
        for e in sorted(cls(cls.META_SCHEMA).iter_errors(schema), key=lambda e: list(e.absolute_path))
    ]
    if problems:
        return problems
    return [
        Problem(file, "/tool/inputSchema" + pointer(path), message)
        for path, message in _unresolvable_refs(schema, cls.META_SCHEMA.get("$schema", ""))
    ]


def _unresolvable_refs(schema: dict[str, Any], dialect: str) -> list[tuple[list[Any], str]]:
    """(path, message) of each `$ref` that does not resolve within the schema itself."""
    from referencing import Registry, Resource, Specification
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import specification_with

    specification: Specification[Any] = specification_with(dialect)
    root = Resource.from_contents(schema, default_specification=specification)
    found: list[tuple[list[Any], str]] = []

    def walk(node: Any, path: list[Any], resolver: Any) -> None:
        if isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, [*path, index], resolver)
            return
        if not isinstance(node, dict):
            return
        if isinstance(node.get("$id"), str) and path:
            resolver = resolver.in_subresource(Resource.from_contents(node, default_specification=specification))
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                resolver.lookup(ref)
            except Unresolvable:
                found.append(
                    ([*path, "$ref"], f"$ref {ref!r} points to nothing in this schema (only references inside "
                     "the schema work, such as '#/$defs/NAME'; nothing is fetched)")
                )  # fmt: skip
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                walk(value, [*path, key], resolver)

    walk(schema, [], Registry().with_resource(root.id() or "", root).resolver(root.id() or ""))
    return found


@lru_cache(maxsize=256)
def _body_validator(schema_json: str) -> Any:
    from jsonschema.validators import Draft202012Validator, validator_for
    from jsonschema_specifications import REGISTRY

    schema = json.loads(schema_json)
    cls = validator_for(schema, default=Draft202012Validator)
    # Only the metaschemas besides the schema itself: jsonschema's default registry would fetch a remote
    # `$ref` from the network (a tool's schema must not make the runner send requests).
    return cls(schema, registry=REGISTRY)


def body_problems(input_schema: dict[str, Any], body: Any) -> list[str]:
    """Every way `body` fails `input_schema`, each naming the field (as a JSON pointer)."""
    if not isinstance(body, dict):
        return [f"the body must be a JSON object, got {_json_kind(body)}"]
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as exc:  # a date, a set, NaN: nothing a tool could read as JSON
        return [f"the body is not JSON data: {exc}"]
    except RecursionError:
        return ["the body is nested too deeply"]
    from referencing.exceptions import Unresolvable

    validator = _body_validator(json.dumps(input_schema, sort_keys=True))
    try:
        errors = sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
    except Unresolvable as exc:  # a manifest's load refuses these; a schema built in code may still hold one
        return [f"the tool's inputSchema cannot check it: its $ref {exc.ref!r} points to nothing"]
    except RecursionError:  # a recursive schema walking a body just under json's own depth limit
        return ["the body is nested too deeply"]
    problems = []
    for error in errors:
        field = "/" + "/".join(map(str, error.absolute_path)) if error.absolute_path else "body"
        problems.append(f"{field}: {error.message}")
    return problems


def _json_kind(value: Any) -> str:
    kinds = ((type(None), "null"), (bool, "a boolean"), (str, "a string"), (int | float, "a number"))
    kinds += ((list | tuple, "an array"),)
    return next((name for kind, name in kinds if isinstance(value, kind)), f"a Python {type(value).__name__}")
