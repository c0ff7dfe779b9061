"""What hyperpocket's real tools need to run unchanged: a build's home at call time, the stdout of a failing
tool, and an error that says a tool without network could not resolve a host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.invocation import Outcome
from runner.manifest import load_manifest

docker = pytest.mark.docker


def _tool(folder: Path, name: str, run: str, build: str | None = None, **extra) -> Path:
    folder.mkdir(parents=True)
    entrypoint = {"run": run, **({"build": build} if build else {})}
    manifest = {
        "tool": {"name": name, "description": "test", "inputSchema": {"type": "object"}},
        "language": "python",
        "entrypoint": entrypoint,
        **extra,
    }
    (folder / "pocket.json").write_text(json.dumps(manifest))
    return folder


@docker
def test_what_the_build_puts_under_home_is_there_at_call_time(sandbox, tmp_path):
    folder = _tool(
        tmp_path / "homebuild",
        "homebuild",
        "sh -c 'echo \"$(cat $HOME/.cache/browsers/chromium) $HOME\"'",
        build="mkdir -p ~/.cache/browsers && echo installed > ~/.cache/browsers/chromium",
    )
    result = sandbox.run(load_manifest(folder), {}, {})
    assert result.ok, result
    assert result.value == "installed /home/pocket"


@docker
def test_a_build_that_leaves_home_empty_keeps_a_writable_home(sandbox, tmp_path):
    folder = _tool(tmp_path / "nohome", "nohome", 'sh -c \'echo x > "$HOME/f" && echo "$HOME"\'', build="true")
    assert sandbox.run(load_manifest(folder), {}, {}).value == "/tmp"


@docker
def test_a_failing_tools_stdout_is_kept_and_shown(sandbox, tmp_path, cli):
    folder = _tool(tmp_path / "halfway", "halfway", 'sh -c \'echo "{\\"partial\\": 1}"; echo boom >&2; exit 3\'')
    result = sandbox.run(load_manifest(folder), {}, {"SECRET_TOKEN": "tok-93d1"})
    assert result.outcome is Outcome.TOOL_FAILED and result.value is None
    assert result.stdout == '{"partial": 1}\n'
    assert result.text() == 'error: the tool exited with code 3: boom\nthe tool printed:\n{"partial": 1}'
    ran = cli("invoke", str(folder), "halfway", "--body", "{}")
    assert ran.returncode == 1
    assert ran.stdout == '{"partial": 1}\n'
    assert "the tool exited with code 3: boom" in ran.stderr


def test_a_failing_tools_stdout_is_redacted():
    from runner.invocation import Invocation, redact

    failed = Invocation("t", Outcome.TOOL_FAILED, error="x", stdout="token tok-93d1 printed")
    assert redact(failed, ["tok-93d1"]).stdout == "token [redacted] printed"


@docker
def test_a_tool_without_network_that_cannot_resolve_a_host_is_told_how_to_get_network(sandbox, tmp_path):
    folder = _tool(tmp_path / "offline", "offline", "python -c \"import socket; socket.getaddrinfo('slack.com', 443)\"")
    result = sandbox.run(load_manifest(folder), {}, {})
    assert result.outcome is Outcome.TOOL_FAILED
    assert result.error.endswith(
        "(the tool could not resolve a host name: it has no network. Grant it the hosts it needs with "
        '[sandbox.tools.offline] network = ["api.example.com"] in settings, or "sandbox": {"network": [...]} '
        "in its pocket.json)"
    ), result.error
    assert "Temporary failure in name resolution" in result.stderr or "Name or service" in result.stderr
