"""A body's check against a tool's inputSchema: the compiled check (fastjsonschema) that tells a valid body
quickly must agree with jsonschema, which finds the problems and their messages."""

from __future__ import annotations

import json
import random
from typing import Any

from runner.schema import _body_check, body_problems

TYPES = ["string", "integer", "number", "boolean", "null", "array", "object"]


def _schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A schema of the keywords both libraries are trusted to read alike."""
    schema: dict[str, Any] = {}
    kind = rng.choice([*TYPES, None, ["string", "null"], ["integer", "number"]])
    if kind is not None:
        schema["type"] = kind
    for keyword, value in (
        ("minLength", rng.randint(0, 3)), ("maxLength", rng.randint(1, 4)), ("minimum", rng.choice([0, 1.5, -2])),
        ("maximum", rng.choice([3, 10.5])), ("exclusiveMinimum", rng.choice([0, 2])), ("exclusiveMaximum", 7),
        ("minItems", rng.randint(0, 2)), ("maxItems", rng.randint(1, 3)), ("uniqueItems", rng.random() < 0.5),
        ("minProperties", 1), ("maxProperties", 2), ("enum", rng.choice([[1, "a", None], [True, 0], [[1], {"a": 1}]])),
        ("const", rng.choice([1, 1.0, True, "x", [1]])), ("format", "date-time"), ("description", "d"),
        ("default", 5), ("title", "t"),
    ):  # fmt: skip
        if rng.random() < 0.15:
            schema[keyword] = value
    if depth < 2:
        if rng.random() < 0.5:
            schema["properties"] = {name: _schema(rng, depth + 1) for name in rng.sample("abcd", rng.randint(1, 3))}
        if rng.random() < 0.3:
            schema["required"] = rng.sample("abcd", rng.randint(1, 2))
        if rng.random() < 0.3:
            schema["additionalProperties"] = rng.choice([False, True, {"type": "integer"}])
        if rng.random() < 0.3:
            schema["items"] = _schema(rng, depth + 1)
        if rng.random() < 0.2:
            schema[rng.choice(["anyOf", "oneOf", "allOf"])] = [_schema(rng, depth + 1) for _ in range(2)]
        if rng.random() < 0.1:
            schema["not"] = _schema(rng, depth + 1)
    return schema


def _value(rng: random.Random, depth: int = 0) -> Any:
    choices: list[Any] = [None, True, False, 0, 1, 1.0, 2.5, -3, 7, 10**20, "", "x", "abcd", "\U0001f600", "2026-12-07"]
    if depth < 2:
        choices += [[_value(rng, depth + 1) for _ in range(rng.randint(0, 3))] for _ in range(2)]
        choices += [{k: _value(rng, depth + 1) for k in rng.sample("abcde", rng.randint(0, 3))} for _ in range(3)]
    return rng.choice(choices)


def test_the_compiled_check_and_jsonschema_agree_on_which_bodies_are_valid():
    """Over 600 random schemas of the keywords the compiled check is used for, 30 random bodies each: a body
    the compiled check passes is one jsonschema finds nothing wrong with, and the other way round."""
    rng = random.Random(20261207)
    compared = disagreements = passed = 0
    samples = []
    for _ in range(600):
        schema = {"type": "object", "properties": {"p": _schema(rng), "q": _schema(rng)}}
        check = _body_check(schema)
        if check.compiled() is None:  # one fastjsonschema refuses to compile (a property both required and refused)
            continue
        for _ in range(30):
            body = {key: _value(rng) for key in rng.sample(["p", "q", "r"], rng.randint(0, 3))}
            fast = check.passes(body)  # the compiled check, made above
            slow = not list(check.validator.iter_errors(body))
            compared += 1
            passed += slow
            if fast != slow:
                disagreements += 1
                samples.append((json.dumps(schema), json.dumps(body), fast, slow))
    assert disagreements == 0, samples[:5]
    assert compared > 15000 and 0.1 < passed / compared < 0.9, (compared, passed)


def test_a_schema_with_a_pattern_or_a_ref_is_checked_by_jsonschema_alone():
    """A pattern would be Python's `re` in the compiled check (a hostile one could hang it), a `$ref` could be
    fetched: those schemas never reach it, and their bodies are still checked."""
    hostile = {"type": "object", "properties": {"x": {"type": "string", "pattern": "^(a+)+$"}}}
    assert _body_check(hostile).compiled() is None
    assert body_problems(hostile, {"x": "a" * 40 + "!"}) == [f"/x: {'a' * 40 + '!'!r} does not match '^(a+)+$'"]
    referring = {"type": "object", "$defs": {"n": {"type": "integer"}}, "properties": {"x": {"$ref": "#/$defs/n"}}}
    assert _body_check(referring).compiled() is None
    assert body_problems(referring, {"x": "1"}) == ["/x: '1' is not of type 'integer'"]
    assert body_problems(referring, {"x": 1}) == []


def test_a_check_writes_no_default_into_the_body_and_takes_a_tuple_as_an_array():
    schema = {"type": "object", "properties": {"n": {"type": "integer", "default": 3}, "xs": {"type": "array"}}}
    body: dict[str, Any] = {"xs": (1, 2)}
    assert body_problems(schema, body) == []
    assert body == {"xs": (1, 2)}  # the defaults stay the tool's business
    assert body_problems({**schema, "properties": {"xs": {"type": "array", "pattern": "x"}}}, body) == []


def test_an_invalid_body_still_gets_every_problem_by_its_field():
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "minLength": 1}, "n": {"type": "integer", "maximum": 3}},
        "required": ["name"],
        "additionalProperties": False,
    }
    assert body_problems(schema, {"name": "", "n": 4, "extra": 1}) == [
        "body: Additional properties are not allowed ('extra' was unexpected)",
        "/n: 4 is greater than the maximum of 3",
        "/name: '' should be non-empty",
    ]


def test_a_schema_naming_a_url_anywhere_makes_no_request_when_a_body_is_checked():
    """A `$ref` inside the values of `const` or `examples` is data to JSON Schema, but fastjsonschema resolves it
    while compiling (with urllib, no timeout): a hostile tool's schema could make the runner fetch any URL. Such a
    schema is left to jsonschema, which fetches nothing; a server on 127.0.0.1 counts the requests."""
    import http.server
    import threading

    asked: list[str] = []

    class Counting(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"type": "integer"}')

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/schema.json"
    try:
        examples = {"type": "object", "properties": {"x": {"type": "string", "examples": [{"$ref": url}]}}}
        constant = {"type": "object", "properties": {"x": {"const": {"$ref": url + "#c"}}}}
        assert body_problems(examples, {"x": "a"}) == [] and body_problems(examples, {"x": 1})
        assert body_problems(constant, {"x": {"$ref": url + "#c"}}) == []
        assert body_problems(constant, {"x": 1}) == ["/x: {'$ref': '" + url + "#c'} was expected"]
    finally:
        server.shutdown()
    assert asked == []
