"""pocket.json validation: the corpus loads unchanged, and bad manifests say what, where and why."""

import json
from pathlib import Path

import pytest

from runner.errors import ManifestError
from runner.manifest import load_manifest
from runner.schema import schemas_dir
from tests.helpers import VALID, corpus_folders, require_corpus, write


def problems_of(folder: Path, **options) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifest(folder, **options)
    return [str(p) for p in info.value.problems]


def test_the_corpus_has_82_manifests():
    require_corpus()
    assert len(corpus_folders()) == 82


@pytest.mark.parametrize("folder", corpus_folders(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_hyperpocket_manifest_validates_unchanged(folder):
    manifest = load_manifest(folder)
    document = json.loads((folder / "pocket.json").read_text())
    assert manifest.name == document["tool"]["name"]
    assert manifest.entrypoint.run == document["entrypoint"]["run"]
    if (document.get("auth") or {}).get("auth_provider"):
        assert manifest.auth.provider == document["auth"]["auth_provider"]
        assert list(manifest.auth.scopes) == document["auth"].get("scopes", [])


def test_a_valid_manifest_becomes_a_typed_model(tmp_path):
    document = {
        **VALID,
        "auth": {"auth_provider": "slack", "auth_handler": "slack-oauth", "scopes": ["channels:history"]},
        "variables": {"REGION": "eu"},
        "sandbox": {"network": ["slack.com"], "timeout_seconds": 5, "memory_mb": 128},
        "entrypoint": {"build": "pip install .", "run": "python -m tool", "handler": "tool.main:run"},
    }
    manifest = load_manifest(write(tmp_path, document))
    assert manifest.folder == tmp_path
    assert manifest.tool.input_schema["properties"]["text"] == {"type": "string"}
    assert (manifest.auth.provider, manifest.auth.handler, manifest.auth.scopes) == (
        "slack",
        "slack-oauth",
        ("channels:history",),
    )
    assert manifest.variables == {"REGION": "eu"}
    assert manifest.sandbox.network == ("slack.com",)
    assert manifest.sandbox.timeout_seconds == 5
    assert manifest.entrypoint.handler == "tool.main:run"
    assert manifest.warnings == ()


def test_every_problem_is_reported_at_once_with_its_pointer(tmp_path):
    document = {
        "tool": {"name": "bad name!", "description": "", "inputSchema": {"type": "object"}},
        "entrypoint": {"build": 1},
        "auth": {"auth_provider": "Slack", "scopes": "channels:history"},
    }
    problems = problems_of(write(tmp_path, document))
    file = str(tmp_path / "pocket.json")
    assert all(p.startswith(file) for p in problems)
    text = "\n".join(problems)
    assert "needs `language` (python or node) or `baseImage`" in text
    assert "/tool/name: error: tool name 'bad name!' is not a safe identifier" in text
    assert "/tool/description: error:" in text
    assert "/entrypoint: error: 'run' is a required property" in text
    assert "/entrypoint/build: error: 1 is not of type 'string'" in text
    assert "/auth/auth_provider: error:" in text
    assert "/auth/scopes: error: 'channels:history' is not of type 'array'" in text
    assert len(problems) == 7


def test_invalid_json_reports_line_and_column(tmp_path):
    problems = problems_of(write(tmp_path, '{\n  "tool": {,\n}'))
    expected = "line 2, column 12: error: invalid JSON: Expecting property name enclosed in double quotes"
    assert problems == [f"{tmp_path / 'pocket.json'}: {expected}"]


def test_missing_manifest_is_a_clear_error(tmp_path):
    assert problems_of(tmp_path) == [f"{tmp_path / 'pocket.json'}: error: no pocket.json in this folder"]


def test_input_schema_must_itself_be_a_json_schema(tmp_path):
    document = json.loads(json.dumps(VALID))
    document["tool"]["inputSchema"]["properties"]["text"]["type"] = "strin"
    problems = problems_of(write(tmp_path, document))
    assert len(problems) == 1
    assert "/tool/inputSchema/properties/text/type: error: not a valid JSON Schema" in problems[0]


def test_input_schema_must_describe_an_object(tmp_path):
    document = {**VALID, "tool": {**VALID["tool"], "inputSchema": {"type": "array"}}}
    problems = problems_of(write(tmp_path, document))
    assert any("/tool/inputSchema/type: error: 'object' was expected" in p for p in problems)


@pytest.mark.parametrize("name", ["a" * 65, "has space", "dots.are.out", "ünïcode", ""])
def test_unsafe_tool_names_are_refused(tmp_path, name):
    document = {**VALID, "tool": {**VALID["tool"], "name": name}}
    assert any("/tool/name: error:" in p for p in problems_of(write(tmp_path, document)))


def test_unknown_keys_are_warnings_and_errors_when_strict(tmp_path):
    folder = write(tmp_path, {**VALID, "runtime": "python", "tool": {**VALID["tool"], "icon": "echo.png"}})
    manifest = load_manifest(folder)
    assert [str(w) for w in manifest.warnings] == [
        f"{folder / 'pocket.json'}: /runtime: warning: unknown key 'runtime' is ignored",
        f"{folder / 'pocket.json'}: /tool/icon: warning: unknown key 'icon' is ignored",
    ]
    assert problems_of(folder, strict=True) == [
        f"{folder / 'pocket.json'}: /runtime: error: unknown key 'runtime' (not allowed with --strict)",
        f"{folder / 'pocket.json'}: /tool/icon: error: unknown key 'icon' (not allowed with --strict)",
    ]


def test_sandbox_block_is_checked(tmp_path):
    document = {**VALID, "sandbox": {"network": "yes", "memory_mb": 1, "disk": 5}}
    text = "\n".join(problems_of(write(tmp_path, document)))
    assert "/sandbox/network: error:" in text
    assert "/sandbox/memory_mb: error: 1 is less than the minimum of 16" in text
    assert "/sandbox: error: unknown key(s) ('disk' was unexpected)" in text


def test_published_schemas_are_valid_2020_12_schemas():
    from jsonschema import Draft202012Validator

    for name in ("pocket.schema.json", "auth.schema.json"):
        schema = json.loads((schemas_dir() / name).read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)


def test_every_ref_of_the_input_schema_must_resolve_inside_it(tmp_path):
    schema = {
        "type": "object",
        "properties": {
            "a": {"$ref": "#/$defs/text"},
            "b": {"$ref": "#/$defs/missing"},
            "c": {"$ref": "https://schemas.example/remote.json"},  # never fetched: refused
        },
        "$defs": {"text": {"type": "string"}},
    }
    problems = problems_of(write(tmp_path, {**VALID, "tool": {**VALID["tool"], "inputSchema": schema}}))
    assert [p.split(": error: ")[0].rsplit(": ", 1)[1] for p in problems] == [
        "/tool/inputSchema/properties/b/$ref",
        "/tool/inputSchema/properties/c/$ref",
    ]
    assert "'#/$defs/missing' points to nothing in this schema" in problems[0]


def test_a_schema_built_in_code_with_a_dangling_ref_is_a_clear_body_problem():
    from runner.schema import body_problems

    schema = {"type": "object", "properties": {"a": {"$ref": "https://schemas.example/remote.json"}}}
    assert body_problems(schema, {"a": 1}) == [
        "the tool's inputSchema cannot check it: its $ref 'https://schemas.example/remote.json' points to nothing"
    ]


@pytest.mark.parametrize("name", ["HOME", "pocket_nonce"])
def test_variables_the_sandbox_sets_itself_are_refused(tmp_path, name):
    problems = problems_of(write(tmp_path, {**VALID, "variables": {name: "x"}}))
    assert problems == [f"{tmp_path / 'pocket.json'}: /variables/{name}: error: variable {name!r} is reserved for the "
                        "sandbox; rename it"]  # fmt: skip


def test_a_manifest_linked_to_a_file_outside_the_folder_is_refused(tmp_path):
    outside = write(tmp_path / "elsewhere", VALID) / "pocket.json"
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "pocket.json").symlink_to(outside)
    link = tmp_path / "tool" / "pocket.json"
    assert problems_of(tmp_path / "tool") == [
        f"{link}: error: pocket.json is a symbolic link to a file outside the tool's folder"
    ]
    (tmp_path / "tool" / "real.json").write_text(json.dumps(VALID))
    (tmp_path / "tool" / "pocket.json").unlink()
    (tmp_path / "tool" / "pocket.json").symlink_to("real.json")  # inside the folder: fine
    assert load_manifest(tmp_path / "tool").name == "echo"


def with_input_schema(schema: dict) -> dict:
    return {**VALID, "tool": {**VALID["tool"], "inputSchema": schema}}


def test_patterns_re2_cannot_run_are_refused_naming_where(tmp_path):
    schema = {
        "type": "object",
        "properties": {"x": {"type": "string", "pattern": "^(?=a)b"}},
        "patternProperties": {"(a)\\1": {}},
    }
    problems = problems_of(write(tmp_path, with_input_schema(schema)))
    file = tmp_path / "pocket.json"
    assert problems == [
        f"{file}: /tool/inputSchema/patternProperties/(a)\\1: error: pattern '(a)\\\\1' is not supported: invalid "
        "escape sequence: \\1 (patterns are matched in linear time: no lookarounds or backreferences)",
        f"{file}: /tool/inputSchema/properties/x/pattern: error: pattern '^(?=a)b' is not supported: invalid perl "
        "operator: (?= (patterns are matched in linear time: no lookarounds or backreferences)",
    ]


def test_patterns_re2_can_run_load_including_json_schema_unicode_escapes(tmp_path):
    schema = {"type": "object", "properties": {"x": {"pattern": "^(a+)+$"}}, "patternProperties": {"^\\u00e9$": {}}}
    assert load_manifest(write(tmp_path, with_input_schema(schema))).name == "echo"


def test_pattern_properties_beside_unevaluated_properties_are_refused(tmp_path):
    """jsonschema matches those with Python's backtracking engine, where no keyword of ours reaches."""
    schema = {"type": "object", "patternProperties": {"^a": {}}, "unevaluatedProperties": False}
    assert problems_of(write(tmp_path, with_input_schema(schema))) == [
        f"{tmp_path / 'pocket.json'}: /tool/inputSchema/patternProperties: error: patternProperties cannot be "
        "combined with unevaluatedProperties (patterns there would not be matched in linear time)"
    ]


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"type": "object", "$ref": "#"}, "/tool/inputSchema/$ref"),
        ({"type": "object", "allOf": [{"$ref": "#"}]}, "/tool/inputSchema/allOf/0/$ref"),
        (
            {
                "type": "object",
                "properties": {"x": {"$ref": "#/$defs/a"}},
                "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}]}, "b": {"not": {"$ref": "#/$defs/a"}}},
            },
            "/tool/inputSchema/$defs/b/not/$ref",
        ),
    ],
)
def test_a_schema_referring_to_itself_without_going_into_the_body_is_refused(tmp_path, schema, where):
    """jsonschema would recurse until Python's stack ran out, on every body."""
    assert problems_of(write(tmp_path, with_input_schema(schema))) == [
        f"{tmp_path / 'pocket.json'}: {where}: error: $ref {schema_ref(schema, where)!r} leads back to a schema it "
        "is part of without going into the body: checking a body would never end"
    ]


def schema_ref(schema: dict, where: str):
    node = schema
    for part in where.split("/")[3:]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def test_a_recursive_schema_that_goes_into_the_body_loads(tmp_path):
    schema = {
        "type": "object",
        "properties": {"child": {"$ref": "#"}, "items": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "$defs": {"node": {"allOf": [{"$ref": "#"}]}},
    }
    assert load_manifest(write(tmp_path, with_input_schema(schema))).name == "echo"


def test_title_annotations_and_output_schema_load(tmp_path):
    output = {"type": "object", "properties": {"echoed": {"type": "string"}}, "required": ["echoed"]}
    tool = {**VALID["tool"], "title": "Echo", "outputSchema": output}
    tool["annotations"] = {"readOnlyHint": True, "openWorldHint": False}
    manifest = load_manifest(write(tmp_path, {**VALID, "tool": tool}), strict=True)
    assert (manifest.tool.title, manifest.tool.output_schema) == ("Echo", output)
    assert manifest.tool.annotations.read_only is True and manifest.tool.annotations.destructive is None
    assert manifest.tool.annotations.hints() == {"readOnlyHint": True, "openWorldHint": False}  # only those said


def test_a_manifest_without_them_has_none(tmp_path):
    manifest = load_manifest(write(tmp_path, VALID), strict=True)
    assert (manifest.tool.title, manifest.tool.annotations, manifest.tool.output_schema) == (None, None, None)


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"readonlyHint": True}, "/tool/annotations: error: unknown key(s) ('readonlyHint' was unexpected)"),
        ({"readOnlyHint": "yes"}, "/tool/annotations/readOnlyHint: error: 'yes' is not of type 'boolean'"),
        ([], "/tool/annotations: error: [] is not of type 'object'"),
    ],
)
def test_a_misspelt_or_mistyped_hint_is_an_error(tmp_path, annotations, expected):
    problems = problems_of(write(tmp_path, {**VALID, "tool": {**VALID["tool"], "annotations": annotations}}))
    assert len(problems) == 1 and expected in problems[0], problems


@pytest.mark.parametrize(
    ("output_schema", "expected"),
    [
        ({"type": "array"}, "/tool/outputSchema/type: error: 'object' was expected"),
        ({"properties": {}}, "/tool/outputSchema: error: 'type' is a required property"),
        (
            {"type": "object", "properties": {"n": {"type": "integr"}}},
            "/tool/outputSchema/properties/n/type: error: not a valid JSON Schema",
        ),
        (
            {"type": "object", "properties": {"n": {"$ref": "#/$defs/missing"}}},
            "/tool/outputSchema/properties/n/$ref: error:",
        ),
    ],
)
def test_output_schema_must_be_a_json_schema_for_an_object(tmp_path, output_schema, expected):
    problems = problems_of(write(tmp_path, {**VALID, "tool": {**VALID["tool"], "outputSchema": output_schema}}))
    assert len(problems) == 1 and expected in problems[0], problems
