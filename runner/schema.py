"""Every use of JSON Schema: the published schemas, manifest validation, tool input schemas and body checks.

One module, so the rules a manifest is held to and the rules a body is checked with cannot drift apart,
and the tool-name pattern is written once (in `schemas/pocket.schema.json`). jsonschema is imported only
when a check runs, so importing the runner stays fast.

A tool's schema is written by whoever published the tool, so it is treated as hostile: its regular
expressions are matched by re2 (linear time, so no pattern can hang a call by backtracking), a pattern
re2 cannot run is refused at load, and so is a `$ref` loop that would recurse without end.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterator
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from runner.errors import Problem

_DATA_KEYWORDS = {"enum", "const", "default", "examples"}  # values here are data, not schemas
# Where keywords hold subschemas, and which of those apply to the very value their parent applies to.
_SCHEMA_KEYWORDS = {"additionalProperties", "additionalItems", "items", "contains", "propertyNames", "not", "if"}
_SCHEMA_KEYWORDS |= {"then", "else", "unevaluatedItems", "unevaluatedProperties", "contentSchema"}
_SCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems", "items"}
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"}
_IN_PLACE = {"allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas", "dependencies"}
_REFS = ("$ref", "$dynamicRef", "$recursiveRef")


MESSAGE_MAX = 300  # characters of one body problem; the rest is cut
_JSON_ONLY = json.JSONEncoder(allow_nan=False)  # one: json.dumps with an option makes a new one per call


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
    """pocket.schema.json, whose `properties` say which keys are known (others are warned about)."""
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


def input_schema_problems(file: str, schema: Any, key: str = "inputSchema") -> list[Problem]:
    """`tool.inputSchema` (or `tool.outputSchema`, as `key`) must itself be a valid JSON Schema (checked against
    its own dialect's metaschema) whose every `$ref` resolves inside it (nothing is ever fetched)."""
    if not isinstance(schema, dict):
        return []  # already reported by the manifest schema
    from jsonschema.validators import Draft202012Validator, validator_for

    cls = validator_for(schema, default=Draft202012Validator)
    problems = [
        Problem(file, f"/tool/{key}" + pointer(e.absolute_path), f"not a valid JSON Schema: {e.message}")
        for e in sorted(cls(cls.META_SCHEMA).iter_errors(schema), key=lambda e: list(e.absolute_path))
    ]
    if problems:
        return problems
    dialect = cls.META_SCHEMA.get("$schema", "")
    found = _unresolvable_refs(schema, dialect) + _unsupported_patterns(schema) + _endless_refs(schema, dialect)
    return [Problem(file, f"/tool/{key}" + pointer(path), message) for path, message in found]


def _subschemas(node: dict[str, Any]) -> Iterator[tuple[list[Any], Any, bool]]:
    """(path from `node`, subschema, whether it applies to the same value as `node`) of its direct subschemas."""
    for key, value in node.items():
        in_place = key in _IN_PLACE
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            yield from (([key, name], sub, in_place) for name, sub in value.items())
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            yield from (([key, index], sub, in_place) for index, sub in enumerate(value))
        elif key in _SCHEMA_KEYWORDS:
            yield [key], value, in_place


def _unresolvable_refs(schema: dict[str, Any], dialect: str) -> list[tuple[list[Any], str]]:
    """(path, message) of each `$ref` that does not resolve within the schema itself."""
    from referencing import Resource, Specification
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import specification_with

    specification: Specification[Any] = specification_with(dialect)
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

    walk(schema, [], _resolver(schema, dialect))
    return found


def _resolver(schema: dict[str, Any], dialect: str) -> Any:
    """Resolves references within `schema` only: nothing outside it is known, nothing is fetched."""
    from referencing import Registry, Resource, Specification
    from referencing.jsonschema import specification_with

    specification: Specification[Any] = specification_with(dialect)
    root = Resource.from_contents(schema, default_specification=specification)
    return Registry().with_resource(root.id() or "", root).resolver(root.id() or "")


class UnsupportedPattern(Exception):
    """A regular expression re2 cannot run: lookarounds, backreferences, or simply invalid."""

    def __init__(self, pattern: str, reason: str):
        super().__init__(f"pattern {pattern!r} is not supported: {reason}")
        self.pattern, self.reason = pattern, reason


_ECMA_UNICODE_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9A-Fa-f]{4})")


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> Any:
    """`pattern` compiled by re2 (JSON Schema's `\\uXXXX` escapes written as re2's `\\x{XXXX}`)."""
    import re2

    options = re2.Options()
    options.log_errors = False  # a refused pattern is reported to the manifest's author, not logged to stderr
    try:
        return re2.compile(_ECMA_UNICODE_ESCAPE.sub(r"\1\\x{\2}", pattern), options)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise UnsupportedPattern(pattern, reason) from None


def _unsupported_patterns(schema: dict[str, Any]) -> list[tuple[list[Any], str]]:
    """(path, message) of each `pattern` and `patternProperties` key that re2 cannot run, and of each
    `patternProperties` in a schema that uses `unevaluatedProperties` (jsonschema would match those with
    Python's backtracking `re`, beyond reach of the re2 keywords below)."""
    found: list[tuple[list[Any], str]] = []
    nodes: list[tuple[list[Any], dict[str, Any]]] = []

    def walk(node: Any, path: list[Any]) -> None:
        if not isinstance(node, dict):
            return
        nodes.append((path, node))
        for sub_path, sub, _ in _subschemas(node):
            walk(sub, [*path, *sub_path])

    walk(schema, [])
    unevaluated = any("unevaluatedProperties" in node for _, node in nodes)
    for path, node in nodes:
        candidates = [([*path, "pattern"], node["pattern"])] if isinstance(node.get("pattern"), str) else []
        properties = node.get("patternProperties")
        if isinstance(properties, dict):
            if unevaluated:
                found.append(
                    ([*path, "patternProperties"], "patternProperties cannot be combined with unevaluatedProperties "
                     "(patterns there would not be matched in linear time)")
                )  # fmt: skip
            candidates += [([*path, "patternProperties", key], key) for key in properties]
        for where, pattern in candidates:
            try:
                _regex(pattern)
            except UnsupportedPattern as exc:
                found.append((where, f"{exc} (patterns are matched in linear time: no lookarounds or backreferences)"))
    return found


def _endless_refs(schema: dict[str, Any], dialect: str) -> list[tuple[list[Any], str]]:
    """(path, message) of each reference that leads back to a schema containing it without going into the body
    (`{"$ref": "#"}`): checking any body against it would recurse until the stack ran out."""
    from referencing import Resource
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import specification_with

    paths: dict[int, list[Any]] = {}

    def index(node: Any, path: list[Any]) -> None:
        if isinstance(node, dict):
            paths.setdefault(id(node), path)
        children = enumerate(node) if isinstance(node, list) else node.items() if isinstance(node, dict) else ()
        for key, value in children:
            if key not in _DATA_KEYWORDS:
                index(value, [*path, key])

    index(schema, [])
    found: list[tuple[list[Any], str]] = []
    done: set[int] = set()
    # Schemas that apply to a part of the value (a property, an item) start a search of their own: a loop
    # through them goes one level deeper into the body each time round, and ends with the body.
    starts: deque[tuple[Any, Any]] = deque([(schema, _resolver(schema, dialect))])

    def visit(node: Any, resolver: Any, active: set[int]) -> None:
        if not isinstance(node, dict) or id(node) in done:
            return
        active.add(id(node))
        if isinstance(node.get("$id"), str) and node is not schema:
            resource = Resource.from_contents(node, default_specification=specification_with(dialect))
            resolver = resolver.in_subresource(resource)
        for keyword in _REFS:
            ref = node.get(keyword)
            if not isinstance(ref, str):
                continue
            try:
                resolved = resolver.lookup(ref)
            except Unresolvable:
                continue  # reported as unresolvable
            if id(resolved.contents) in active:
                found.append(
                    ([*paths.get(id(node), []), keyword], f"{keyword} {ref!r} leads back to a schema it is part of "
                     "without going into the body: checking a body would never end")
                )  # fmt: skip
            else:
                visit(resolved.contents, resolved.resolver, active)
        for _, sub, in_place in _subschemas(node):
            if in_place:
                visit(sub, resolver, active)
            else:
                starts.append((sub, resolver))
        active.discard(id(node))
        done.add(id(node))

    while starts:
        node, resolver = starts.popleft()  # in document order, so the loop is reported where the body meets it
        visit(node, resolver, set())
    return found


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = _regex(pattern)
        for key, value in instance.items():
            if regex.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """jsonschema's own, with the `patternProperties` keys matched by re2; the same messages."""
    from jsonschema._utils import extras_msg
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    properties, patterns = schema.get("properties", {}), [_regex(p) for p in schema.get("patternProperties", {})]
    extras = {k for k in instance if k not in properties and not any(p.search(k) for p in patterns)}
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            listed = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {listed}")
        else:
            error = "Additional properties are not allowed (%s %s unexpected)"
            yield ValidationError(error % extras_msg(sorted(extras, key=str)))


@cache
def _linear_time(cls: type) -> type:
    """`cls` with every keyword that matches a schema's regular expressions (but unevaluatedProperties, refused
    with patternProperties at load) using re2, and tuples taken as arrays (as JSON encodes them) like lists."""
    from jsonschema.validators import extend

    keywords = {"pattern": _pattern, "patternProperties": _pattern_properties}
    keywords["additionalProperties"] = _additional_properties
    types = cls.TYPE_CHECKER.redefine("array", lambda _checker, instance: isinstance(instance, list | tuple))
    return extend(cls, {k: v for k, v in keywords.items() if k in cls.VALIDATORS}, type_checker=types)


# The keywords fastjsonschema (draft 7) and jsonschema (2020-12, no format assertion) read alike: a schema made of
# these alone is checked by code compiled from it first. Not among them: anything with a regular expression
# (fastjsonschema's are Python's, which a hostile pattern can hang), `$ref` (fastjsonschema fetches a remote one
# with urllib, and finds one even inside the values of `const`, `enum` or `examples`: a schema holding the word
# anywhere is left to jsonschema) and the keywords whose meaning changed between the drafts (items as a list,
# dependencies, multipleOf on floats).
_FAST_ASSERTIONS = {"type", "required", "enum", "const", "minLength", "maxLength", "minimum", "maximum"}
_FAST_ASSERTIONS |= {"exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "uniqueItems"}
_FAST_ASSERTIONS |= {"minProperties", "maxProperties"}
_FAST_ANNOTATIONS = {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "format"}
_FAST_ANNOTATIONS |= {"$comment"}


def _fast_enough(schema: Any, depth: int = 0) -> bool:
    """Whether every keyword of `schema` is one both libraries read alike."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict) or depth > 64:
        return False
    for key, value in schema.items():
        if key in _FAST_ANNOTATIONS:
            continue
        if key in _FAST_ASSERTIONS:
            ok = not (key.startswith("exclusive") and isinstance(value, bool))  # draft 4's boolean form
        elif key == "properties":
            ok = isinstance(value, dict) and all(_fast_enough(sub, depth + 1) for sub in value.values())
        elif key in ("additionalProperties", "items", "not"):
            ok = _fast_enough(value, depth + 1)
        elif key in ("anyOf", "allOf", "oneOf"):
            ok = isinstance(value, list) and all(_fast_enough(sub, depth + 1) for sub in value)
        else:
            ok = False
        if not ok:
            return False
    return True


class _BodyCheck:
    """A schema's checks: jsonschema's finds every problem, with its message; fastjsonschema's, where the schema
    allows it, only tells a valid body (~1 us instead of ~40, 45 us instead of 290 after an idle second): most
    bodies are valid, and an invalid one is then checked again for the messages. The compiled check is made at
    a schema's second body (importing and compiling take 15 ms: not worth it for a one-shot command's one call)."""

    def __init__(self, validator: Any, schema: dict[str, Any] | None):
        self.validator = validator
        self._schema = schema  # None: jsonschema alone checks it
        self._valid: Callable[[Any], Any] | None = None  # raises for an invalid body
        self._checked = 0

    @classmethod
    def of(cls, schema_json: str) -> _BodyCheck:
        from jsonschema.validators import Draft202012Validator, validator_for
        from jsonschema_specifications import REGISTRY

        schema = json.loads(schema_json)
        kind = _linear_time(validator_for(schema, default=Draft202012Validator))
        # Only the metaschemas besides the schema itself: jsonschema's default registry would fetch a remote
        # `$ref` from the network (a tool's schema must not make the runner send requests).
        fast = _fast_enough(schema) and '"$ref"' not in schema_json
        return cls(kind(schema, registry=REGISTRY), schema if fast else None)

    def compiled(self) -> Callable[[Any], Any] | None:
        """The compiled check, made now if it was not; None for a schema jsonschema alone checks."""
        if self._valid is None and self._schema is not None:
            self._valid = _compiled(self._schema)
            if self._valid is None:
                self._schema = None
        return self._valid

    def passes(self, body: Any) -> bool:
        if self._valid is None:
            self._checked += 1
            if self._checked < 2 or self.compiled() is None:
                return False
        try:
            self._valid(body)  # type: ignore[misc]
        except Exception:  # not valid, or anything it cannot read (a nesting too deep...): jsonschema says what
            return False
        return True


def _compiled(schema: dict[str, Any]) -> Callable[[Any], Any] | None:
    """fastjsonschema's check of `schema`: it raises for an invalid body."""
    import fastjsonschema

    try:  # no defaults written into the body, no format asserted (jsonschema asserts none either)
        return fastjsonschema.compile(schema, use_default=False, use_formats=False)  # type: ignore[no-any-return]
    except Exception:  # a schema it cannot compile: jsonschema alone checks it
        return None


@lru_cache(maxsize=256)
def _check_of_json(schema_json: str) -> _BodyCheck:
    return _BodyCheck.of(schema_json)


_CHECKS: dict[int, tuple[dict[str, Any], _BodyCheck]] = {}  # id(schema) -> (schema, its check)


def _body_check(schema: dict[str, Any]) -> _BodyCheck:
    """The checks of `schema`, made once per schema object (and per content, for a schema built anew each call).
    So a schema changed in place keeps its first checks: build a new one instead."""
    known = _CHECKS.get(id(schema))
    if known is not None and known[0] is schema:  # held in the entry, so its id is not another's
        return known[1]
    check = _check_of_json(json.dumps(schema, sort_keys=True))
    if len(_CHECKS) >= 256:
        _CHECKS.clear()
    _CHECKS[id(schema)] = (schema, check)
    return check


def body_problems(input_schema: dict[str, Any], body: Any, *, what: str = "body") -> list[str]:
    """Every way `body` fails `input_schema`, each naming the field (as a JSON pointer). `what` names the value
    in messages: a call's body, or a tool's `result` checked against its outputSchema."""
    if not isinstance(body, dict):
        return [f"the {what} must be a JSON object, got {_json_kind(body)}"]
    try:
        _JSON_ONLY.encode(body)
    except (TypeError, ValueError) as exc:  # a date, a set, NaN: nothing a tool could read as JSON
        return [f"the {what} is not JSON data: {exc}"]
    except RecursionError:
        return [f"the {what} is nested too deeply"]
    check = _body_check(input_schema)
    if check.passes(body):
        return []
    from referencing.exceptions import Unresolvable

    schema_name = "inputSchema" if what == "body" else "outputSchema"
    try:
        errors = sorted(check.validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
    except Unresolvable as exc:  # a manifest's load refuses these; a schema built in code may still hold one
        return [f"the tool's {schema_name} cannot check it: its $ref {exc.ref!r} points to nothing"]
    except RecursionError:  # a recursive schema walking a body just under json's own depth limit
        return [f"the {what} is nested too deeply"]
    except UnsupportedPattern as exc:  # likewise refused at load, but possible in a schema built in code
        return [f"the tool's {schema_name} cannot check it: its {exc}"]
    problems = []
    for error in errors:
        field = "/" + "/".join(map(str, error.absolute_path)) if error.absolute_path else what
        message = error.message  # quotes the value: a 1 MB string must not make a 1 MB error
        if len(message) > MESSAGE_MAX:
            message = f"{message[:MESSAGE_MAX]}... ({len(message)} characters in all)"
        problems.append(f"{field}: {message}")
    return problems


def prepare_body_check(input_schema: dict[str, Any]) -> None:
    """Make `input_schema`'s checks now, the compiled one too: a prepared tool's first calls then import and
    compile nothing (its second call would: 15-30 ms)."""
    _body_check(input_schema).compiled()


def _json_kind(value: Any) -> str:
    kinds = ((type(None), "null"), (bool, "a boolean"), (str, "a string"), (int | float, "a number"))
    kinds += ((list | tuple, "an array"),)
    return next((name for kind, name in kinds if isinstance(value, kind)), f"a Python {type(value).__name__}")
