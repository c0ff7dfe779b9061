"""Invocation results: output parsing, and redaction of the secrets a tool was given."""

import base64

from runner.invocation import (
    HostTraffic,
    Invocation,
    NetworkAccess,
    NetworkReceipt,
    Outcome,
    RefusedHost,
    parse_output,
    redact,
)
from runner.redaction import REDACTED

TOKEN = "xoxb-1234-abcdEFGH/+?&=token"


def test_redaction_covers_the_token_and_its_common_encodings_at_any_depth():
    raw = TOKEN.encode()
    leaked = Invocation(
        "t",
        Outcome.OK,
        value={
            "plain": f"token={TOKEN}",
            "nested": [TOKEN, {"b64": base64.b64encode(raw).decode()}],
            "urlsafe": base64.urlsafe_b64encode(raw).decode().rstrip("="),
            "hex": raw.hex(),
            "HEX": f"0x{raw.hex().upper()}",
            "query": "https://x/?t=xoxb-1234-abcdEFGH%2F%2B%3F%26%3Dtoken",
            TOKEN: "as a key",
        },
        stderr=f"debug: {TOKEN}\n",
        error=f"failed with {TOKEN}",
    )
    clean = redact(leaked, [TOKEN, ""])
    text = repr(clean)
    assert TOKEN not in text
    assert base64.b64encode(raw).decode() not in text and raw.hex() not in text
    assert clean.value["plain"] == f"token={REDACTED}"
    assert clean.value["nested"] == [REDACTED, {"b64": REDACTED}]
    assert clean.value["query"] == f"https://x/?t={REDACTED}"
    assert clean.value["HEX"] == f"0x{REDACTED}"
    assert clean.value[REDACTED] == "as a key"
    assert (clean.stderr, clean.error) == (f"debug: {REDACTED}\n", f"failed with {REDACTED}")


def test_a_token_a_tool_put_in_a_host_name_is_redacted_from_its_network_receipt():
    hex_name = TOKEN.encode().hex()  # a DNS-safe encoding, the form a tool would smuggle it in
    receipt = NetworkReceipt(
        NetworkAccess.HOSTS,
        (HostTraffic("api.example.com", 443, 1, 10, 20),),
        (RefusedHost(f"{hex_name}.evil.test", 443, f"{hex_name}.evil.test:443 is not in the tool's allow-list"),),
    )
    clean = redact(Invocation("t", Outcome.OK, network=receipt), [TOKEN])
    assert clean.network.reached == receipt.reached
    assert clean.network.refused == (
        RefusedHost(f"{REDACTED}.evil.test", 443, f"{REDACTED}.evil.test:443 is not in the tool's allow-list"),
    )


def test_no_secrets_leaves_the_invocation_as_it_is():
    result = Invocation("t", Outcome.OK, value={"a": 1})
    assert redact(result, []) is result


def test_output_is_parsed_as_json_only_when_it_is_json():
    assert parse_output('{"a": 1}\n') == {"a": 1}
    assert parse_output("[1, 2]") == [1, 2]
    assert parse_output("-3.5") == -3.5
    assert parse_output("hello\n") == "hello"
    assert parse_output("{not json") == "{not json"
    assert parse_output("") == ""


def test_a_body_nested_too_deeply_is_a_problem_not_a_crash():
    from runner.schema import body_problems

    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert body_problems({"type": "object"}, {"x": deep}) == ["the body is nested too deeply"]


def test_a_backtracking_pattern_cannot_hang_the_body_check():
    """re2 matches in linear time: Python's `re` would take longer than the universe's age on this body."""
    from runner.schema import body_problems

    hostile = "a" * 50000 + "!"
    schema = {"type": "object", "properties": {"x": {"type": "string", "pattern": "^(a+)+$"}}}
    problems = body_problems(schema, {"x": hostile})
    whole = f"{hostile!r} does not match '^(a+)+$'"  # cut: the problem must not quote 50 KB back
    assert problems == [f"/x: {whole[:300]}... ({len(whole)} characters in all)"]
    keys = {"type": "object", "patternProperties": {"^(a+)+$": {"type": "integer"}}, "additionalProperties": False}
    whole = f"{hostile!r} does not match any of the regexes: '^(a+)+$'"
    assert body_problems(keys, {hostile: 1, "aa": "two"}) == [
        f"body: {whole[:300]}... ({len(whole)} characters in all)",
        "/aa: 'two' is not of type 'integer'",
    ]
    assert body_problems(keys, {"aa": 2}) == []


def test_a_pattern_re2_cannot_run_in_a_schema_built_in_code_is_a_clear_body_problem():
    from runner.schema import body_problems

    schema = {"type": "object", "properties": {"x": {"pattern": "(?<=a)b"}}}
    assert body_problems(schema, {"x": "ab"}) == [
        "the tool's inputSchema cannot check it: its pattern '(?<=a)b' is not supported: invalid perl operator: (?<="
    ]
