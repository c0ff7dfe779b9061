"""The `pocket` command as a person runs it: real processes, exit codes, and what is printed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_manifest import CORPUS, VALID, write

POCKET = str(Path(sys.executable).parent / "pocket")


def pocket(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKET_")}
    return subprocess.run(
        [POCKET, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd, env=env, check=False
    )


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr + result.stdout


def test_validate_the_hyperpocket_corpus():
    result = pocket("validate", str(CORPUS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "82 valid tools"
    assert "/tool/title: warning: unknown key 'title' is ignored" in result.stdout  # google/update-spreadsheet-cells


def test_validate_reports_every_invalid_manifest_and_exits_2(tmp_path):
    write(tmp_path / "good", VALID)
    write(tmp_path / "bad", {**VALID, "tool": {**VALID["tool"], "name": "no spaces allowed"}})
    write(tmp_path / "broken", '{"tool": ')
    result = pocket("validate", str(tmp_path))
    assert result.returncode == 2
    assert_no_traceback(result)
    assert f"{tmp_path / 'bad' / 'pocket.json'}: /tool/name: error: tool name 'no spaces allowed'" in result.stdout
    assert f"{tmp_path / 'broken' / 'pocket.json'}: line 1, column 10: error: invalid JSON" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 valid tool, 2 invalid of 3"


def test_validate_strict_turns_warnings_into_errors(tmp_path):
    write(tmp_path, {**VALID, "extra": True})
    assert pocket("validate", str(tmp_path)).returncode == 0
    strict = pocket("validate", "--strict", str(tmp_path))
    assert strict.returncode == 2
    assert "/extra: error: unknown key 'extra' is ignored" in strict.stdout


def test_validate_a_missing_folder_is_a_clear_error(tmp_path):
    result = pocket("validate", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "nowhere" in result.stderr


def test_list_shows_name_description_auth_and_inputs():
    result = pocket("list", str(CORPUS / "slack"))
    assert result.returncode == 0, result.stderr
    assert "slack_get_messages: get slack messages" in result.stdout
    assert "  auth: slack [channels:history]" in result.stdout
    assert "  channel: string (required)" in result.stdout


def test_list_json_is_machine_readable():
    result = pocket("list", "--json", str(CORPUS / "github" / "create-issue"), str(CORPUS / "none"))
    assert result.returncode == 0, result.stderr
    tools = {t["name"]: t for t in json.loads(result.stdout)}
    issue = tools["github_create_issue"]
    assert (issue["auth_provider"], issue["scopes"]) == ("github", ["repo"])
    assert issue["input_schema"]["required"] == ["owner", "repo", "title"]
    assert tools["adder"]["auth_provider"] is None


def test_list_refuses_duplicate_tool_names(tmp_path):
    write(tmp_path / "a", VALID)
    write(tmp_path / "b", VALID)
    result = pocket("list", str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.returncode == 2
    assert "two tools are named 'echo'" in result.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--body", "{not json"], None, "the body from --body is not valid JSON: Expecting property name"),
        (["--body", "@/nonexistent/body.json"], None, "cannot read the body file /nonexistent/body.json"),
        (["--body", "-"], "[1, 2", "the body from stdin is not valid JSON"),
        (["--body", '{"name": 5}'], None, "invalid body: /name: 5 is not of type 'string'"),
        (["--body", "{}"], None, "invalid body: body: 'name' is a required property"),
        (["--body", "[]"], None, "invalid body: the body must be a JSON object, got list"),
    ],
)
def test_invoke_refuses_a_bad_body_before_running_anything(hello_dir, args, stdin, message):
    result = pocket("invoke", str(hello_dir), "hello", *args, stdin=stdin)
    assert result.returncode == 2, result.stderr
    assert_no_traceback(result)
    assert message in result.stderr


def test_invoke_an_unknown_tool_names_the_known_ones(hello_dir):
    result = pocket("invoke", str(hello_dir), "hallo", "--body", "{}")
    assert result.returncode == 2
    assert "unknown tool 'hallo' (known: hello)" in result.stderr


def test_invoke_a_tool_needing_credentials_exits_3(tmp_path):
    write(tmp_path, {**VALID, "auth": {"auth_provider": "slack", "scopes": ["channels:history"]}})
    result = pocket("invoke", str(tmp_path), "echo", "--body", "{}", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "slack" in result.stderr


def test_bad_settings_are_reported_without_traceback(tmp_path, hello_dir):
    (tmp_path / "settings.toml").write_text("[sandbox]\ncpus = 'many'\n")
    result = pocket("list", str(hello_dir), cwd=tmp_path)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "sandbox.cpus (or POCKET_SANDBOX__CPUS): Input should be a valid number" in result.stderr


@pytest.mark.parametrize("command", [[], ["validate"], ["list"], ["invoke"]])
def test_every_command_has_help_with_examples(command):
    result = pocket(*command, "--help")
    assert result.returncode == 0
    assert "usage: pocket" in result.stdout
    if command:
        assert f"pocket {command[0]} " in result.stdout.split("examples:")[1]


def test_version():
    result = pocket("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("pocket-runner ")


def test_usage_errors_exit_2_with_a_hint():
    result = pocket("validate")
    assert result.returncode == 2
    assert "see `pocket validate --help`" in result.stderr


def test_importing_runner_stays_light():
    """`import runner` and `from runner import Pocket` load no docker, authlib or jsonschema."""
    code = (
        "import sys, runner; from runner import Pocket;"
        "print(sorted(m for m in ('docker', 'authlib', 'jsonschema', 'httpx', 'dynaconf') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
