"""The `pocket` command as a person runs it: exit codes and what is printed.

Most tests call `runner.cli.main(argv)` in this process (the `cli` fixture); those about signals, pipes,
a closed stdin and the console script itself run `pocket` as a real process (`tests.helpers.pocket`).
"""

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import POCKET, VALID, Ran, environment, pocket, require_corpus, settings, write


def assert_no_traceback(result: Ran | subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr + result.stdout


def test_validate_the_hyperpocket_corpus(cli):
    result = cli("validate", str(require_corpus()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "82 valid tools"
    # google/update-spreadsheet-cells names a `tool.title`, a key of ours now (the MCP tool title), not an unknown one
    assert "/tool/title" not in result.stdout and "/tool/type: warning: unknown key 'type' is ignored" in result.stdout


def test_validate_reports_every_invalid_manifest_and_exits_2(cli, tmp_path):
    write(tmp_path / "good", VALID)
    write(tmp_path / "bad", {**VALID, "tool": {**VALID["tool"], "name": "no spaces allowed"}})
    write(tmp_path / "broken", '{"tool": ')
    result = cli("validate", str(tmp_path))
    assert result.returncode == 2
    assert_no_traceback(result)
    assert f"{tmp_path / 'bad' / 'pocket.json'}: /tool/name: error: tool name 'no spaces allowed'" in result.stdout
    assert f"{tmp_path / 'broken' / 'pocket.json'}: line 1, column 10: error: invalid JSON" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 valid tool, 2 invalid of 3"


def test_validate_strict_turns_warnings_into_errors(cli, tmp_path):
    write(tmp_path, {**VALID, "extra": True})
    assert cli("validate", str(tmp_path)).returncode == 0
    strict = cli("validate", "--strict", str(tmp_path))
    assert strict.returncode == 2
    assert "/extra: error: unknown key 'extra'" in strict.stdout
    assert "is ignored" not in strict.stdout  # an error that says it is ignored contradicts itself


def test_validate_a_missing_folder_is_a_clear_error(cli, tmp_path):
    result = cli("validate", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "nowhere" in result.stderr


def test_list_shows_name_description_auth_and_inputs(cli):
    result = cli("list", str(require_corpus() / "slack"))
    assert result.returncode == 0, result.stderr
    assert "slack_get_messages: get slack messages" in result.stdout
    assert "  auth: slack [channels:history]" in result.stdout
    assert "  channel: string (required)" in result.stdout


def test_list_json_is_machine_readable(cli):
    corpus = require_corpus()
    result = cli("list", "--json", str(corpus / "github" / "create-issue"), str(corpus / "none"))
    assert result.returncode == 0, result.stderr
    tools = {t["name"]: t for t in json.loads(result.stdout)}
    issue = tools["github_create_issue"]
    assert (issue["auth_provider"], issue["scopes"]) == ("github", ["repo"])
    assert issue["input_schema"]["required"] == ["owner", "repo", "title"]
    assert tools["adder"]["auth_provider"] is None


def test_list_refuses_duplicate_tool_names(cli, tmp_path):
    write(tmp_path / "a", VALID)
    write(tmp_path / "b", VALID)
    result = cli("list", str(tmp_path / "a"), str(tmp_path / "b"))
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
        (["--body", "[]"], None, "invalid body: the body must be a JSON object, got an array"),
        (["--body", '"Ada"'], None, "invalid body: the body must be a JSON object, got a string"),
        (["--body", "null"], None, "invalid body: the body must be a JSON object, got null"),
        (["--body", "-"], "", "the body on stdin is empty"),
        ([], " \n", "the body on stdin is empty"),
        (["--body", ""], None, "the body given with --body is empty"),
        (["--body", "[" * 100_000], None, "the body from --body is nested too deeply to read"),
    ],
)
def test_invoke_refuses_a_bad_body_before_running_anything(cli, hello_dir, args, stdin, message):
    result = cli("invoke", str(hello_dir), "hello", *args, stdin=stdin)
    assert result.returncode == 2, result.stderr
    assert_no_traceback(result)
    assert message in result.stderr


def test_invoke_refuses_a_body_file_that_is_not_utf8(cli, hello_dir, tmp_path):
    (tmp_path / "body.json").write_bytes(b'{"name": "Ren\xe9"}')
    (tmp_path / "empty.json").write_bytes(b"")
    result = cli("invoke", str(hello_dir), "hello", "--body", f"@{tmp_path / 'body.json'}")
    assert result.returncode == 2, result.stderr
    assert_no_traceback(result)
    assert f"the body from {tmp_path / 'body.json'} is not UTF-8 text (byte 0xe9 at offset 13)" in result.stderr
    assert "internal error" not in result.stderr
    empty = cli("invoke", str(hello_dir), "hello", "--body", f"@{tmp_path / 'empty.json'}")
    assert (empty.returncode, empty.stderr) == (2, f"pocket: the body file {tmp_path / 'empty.json'} is empty: "
                                                   "give a JSON object, such as {}\n")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no body given: pass --body JSON, --body @file.json, or pipe JSON on stdin"),
        (["--body", "-"], "--body - reads the body from stdin, but stdin is closed"),
    ],
)
def test_invoke_with_stdin_closed_is_a_clear_error(hello_dir, args, message):
    """`pocket invoke X hello <&-`: Python starts with sys.stdin None."""
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", POCKET, "invoke", str(hello_dir), "hello", *args],
        capture_output=True, text=True, timeout=60, env=environment(), check=False,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (2, f"pocket: {message}\n")


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf", "-inf"])
def test_invoke_refuses_a_timeout_that_is_not_a_positive_finite_number(cli, hello_dir, timeout):
    result = cli("invoke", str(hello_dir), "hello", "--body", "{}", f"--timeout={timeout}")
    assert result.returncode == 2
    assert_no_traceback(result)
    message = f"argument --timeout: expected a positive, finite number of seconds, got '{timeout}'"
    assert message in result.stderr


def test_invoke_an_unknown_tool_names_the_known_ones(cli, hello_dir):
    result = cli("invoke", str(hello_dir), "hallo", "--body", "{}")
    assert result.returncode == 2
    assert "unknown tool 'hallo' (known: hello)" in result.stderr


def test_invoke_a_tool_needing_credentials_exits_3(cli, tmp_path):
    write(tmp_path, {**VALID, "auth": {"auth_provider": "slack", "scopes": ["channels:history"]}})
    result = cli("invoke", str(tmp_path), "echo", "--body", "{}", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "slack" in result.stderr


def test_bad_settings_are_reported_without_traceback(cli, tmp_path, hello_dir):
    (tmp_path / "settings.toml").write_text("[sandbox]\ncpus = 'many'\n")
    result = cli("list", str(hello_dir), cwd=tmp_path)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "sandbox.cpus (or POCKET_SANDBOX__CPUS): Input should be a valid number" in result.stderr


@pytest.mark.parametrize(
    "where",
    [
        lambda files, cmd: [*files, *cmd],  # pocket --settings F --secrets S list SOURCE
        lambda files, cmd: [*cmd, *files],  # pocket list SOURCE --settings F --secrets S
        lambda files, cmd: [cmd[0], *files, *cmd[1:]],  # pocket list --settings F --secrets S SOURCE
    ],
    ids=["before-the-command", "after-the-command", "between"],
)
def test_settings_and_secrets_files_go_before_or_after_the_command(cli, tmp_path, hello_dir, where):
    (tmp_path / "mine.toml").write_text("[sandbox]\ncpus = 'many'\n")
    (tmp_path / "mine.secrets.toml").write_text("[auth.github]\nclient_id = 'x'\n")
    files = ["--settings", str(tmp_path / "mine.toml"), "--secrets", str(tmp_path / "mine.secrets.toml")]
    for command in (["list", str(hello_dir)], ["auth", "status"]):
        result = cli(*where(files, command))
        assert result.returncode == 2, result.stderr
        assert "sandbox.cpus (or POCKET_SANDBOX__CPUS): Input should be a valid number" in result.stderr
    (tmp_path / "mine.toml").write_text(f'data_dir = "{tmp_path / "data"}"\n')
    (tmp_path / "mine.secrets.toml").write_text("not toml [")
    result = cli(*where(files, ["auth", "status"]))
    assert result.returncode == 2 and "mine.secrets.toml" in result.stderr, result.stderr


def test_a_reader_that_stops_early_is_no_error():
    """`pocket list X | head -1`: stdout closes under us; exit 141 like a tool killed by SIGPIPE, quietly."""
    corpus = require_corpus()
    for command in (["list", str(corpus)], ["validate", str(corpus)], ["list", "--json", str(corpus)]):
        child = subprocess.Popen(
            [POCKET, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment()
        )
        child.stdout.close()  # before the first line is written: the very first write fails
        err = child.stderr.read()
        assert child.wait(30) == 141, err
        assert err == ""


@pytest.mark.docker
def test_sigterm_removes_the_container_of_a_running_call(tmp_path, docker_api):
    """`pocket invoke ... & kill -TERM $!`: exit 143, and the tool's container goes with the process."""
    write(
        tmp_path / "slow",
        {
            "tool": {"name": "slow", "description": "Sleep.", "inputSchema": {"type": "object"}},
            "language": "python",
            "entrypoint": {"run": 'python -c "import time; time.sleep(30)"'},
        },
    )
    child = subprocess.Popen(
        [POCKET, "invoke", str(tmp_path / "slow"), "slow", "--body", "{}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(),
    )  # fmt: skip
    owner = f"{socket.gethostname()}:{child.pid}:"

    def containers() -> list[dict]:
        found = docker_api.containers(all=True, filters={"label": "pocket-runner.owner"})
        return [c for c in found if c["Labels"]["pocket-runner.owner"].startswith(owner)]

    try:
        deadline = time.monotonic() + 60  # a first run builds the tool's image
        while not containers():
            if child.poll() is not None or time.monotonic() > deadline:
                child.kill()
                pytest.fail(f"no container appeared: {child.communicate()[1]}")
            time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=10)
    finally:
        child.kill()
    assert child.returncode == 143, err
    assert err.endswith("pocket: terminated\n") and "Traceback" not in err
    deadline = time.monotonic() + 5
    while containers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert containers() == []


@pytest.mark.parametrize(
    "command",
    [[], ["validate"], ["list"], ["invoke"], ["serve"], ["auth"], ["auth", "login"], ["auth", "status"]],
)
def test_every_command_has_help_with_examples(cli, command):
    result = cli(*command, "--help")
    assert result.returncode == 0
    assert "usage: pocket" in result.stdout
    examples = result.stdout.split("examples:")[1]
    assert f"pocket {' '.join(command)} ".replace("  ", " ") in examples


def test_version():
    result = pocket("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("pocket-runner ")


def test_usage_errors_exit_2_with_a_hint(cli):
    result = cli("validate")
    assert result.returncode == 2
    assert "see `pocket validate --help`" in result.stderr


def test_importing_runner_stays_light():
    """`import runner` and `from runner import Pocket, function_tool` load no heavy or optional dependency."""
    heavy = ("docker", "authlib", "jsonschema", "httpx", "dynaconf", "mcp", "langchain_core", "openai", "anthropic")
    code = (
        "import sys, runner; from runner import Pocket, function_tool;"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_provider_nobody_knows_is_bad_input_not_an_authorization(cli, tmp_path):
    write(tmp_path, {**VALID, "auth": {"auth_provider": "nope"}})
    result = cli("invoke", str(tmp_path), "echo", "--body", "{}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "unknown auth provider 'nope': add it under [auth.nope] in settings" in result.stderr
    checked = cli("validate", str(tmp_path), cwd=tmp_path)
    assert checked.returncode == 0
    assert f"{tmp_path / 'pocket.json'}: /auth: warning: unknown auth provider 'nope'" in checked.stdout
    strict = cli("validate", "--strict", str(tmp_path), cwd=tmp_path)
    assert strict.returncode == 2 and "/auth: error: unknown auth provider 'nope'" in strict.stdout
    (tmp_path / "settings.toml").write_text('[auth.nope]\ntoken = "t0k3n-from-settings"\n')
    assert cli("validate", "--strict", str(tmp_path), cwd=tmp_path).returncode == 0  # defined in settings


def test_list_of_a_folder_with_an_invalid_manifest_points_to_validate(cli, tmp_path):
    write(tmp_path / "good", VALID)
    write(tmp_path / "bad", {**VALID, "tool": {**VALID["tool"], "name": "bad name"}})
    result = cli("list", str(tmp_path))
    assert result.returncode == 2
    assert (
        result.stderr.splitlines()[-1]
        == f"pocket: fix the manifest first; `pocket validate {tmp_path}` checks every tool at once"
    )


def test_control_characters_reach_a_terminal_escaped_and_a_pipe_unchanged(tmp_path, monkeypatch):
    import io

    from runner.cli import main

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    text = "red \x1b[31mtext\x1b]0;title\x07 tab\tnew\nline \x9b"
    write(tmp_path, {**VALID, "tool": {**VALID["tool"], "description": text}})
    escaped = "red \\x1b[31mtext\\x1b]0;title\\x07 tab\tnew\nline \\x9b"
    for stdout, shown in ((Terminal(), escaped), (io.StringIO(), text)):
        monkeypatch.setattr(sys, "stdout", stdout)
        assert main(["list", str(tmp_path)]) == 0
        assert stdout.getvalue() == f"echo: {shown}\n  auth: no auth\n  text: string\n"


def test_a_pasted_token_loses_surrounding_spaces(cli, tmp_path):
    from runner.auth import Authenticator
    from runner.manifest import AuthSpec

    (tmp_path / "settings.toml").write_text(
        f'data_dir = "{tmp_path / "data"}"\ncache_dir = "{tmp_path / "cache"}"\n[credentials]\ncallback_port = 0\n'
    )
    result = cli("auth", "login", "serpapi", stdin="  tok-123 \t\r\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    auth = Authenticator(settings(tmp_path))
    try:
        assert auth.environment(AuthSpec(auth_provider="serpapi")) == {"SERPAPI_TOKEN": "tok-123"}
    finally:
        auth.close()
