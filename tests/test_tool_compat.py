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


PROBE = """
import json, os, socket
from urllib.parse import urlsplit

def tunnel(host):
    proxy = urlsplit(os.environ["HTTPS_PROXY"])
    with socket.create_connection((proxy.hostname, proxy.port), timeout=10) as sock:
        sock.sendall(f"CONNECT {host}:443 HTTP/1.1\\r\\nHost: {host}:443\\r\\n\\r\\n".encode())
        answer = sock.recv(400).decode().split("\\r\\n")
        return answer[0] + (" " + answer[-1].strip() if len(answer) > 2 else "")  # the status and the reason

def direct():
    try:
        socket.create_connection(("1.1.1.1", 443), timeout=2).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__

if "HTTPS_PROXY" in os.environ:
    result = {"slack.com": tunnel("slack.com"), "files.slack.com": tunnel("files.slack.com"),
              "example.com": tunnel("example.com"), "direct": direct()}
else:
    result = {"proxy": None, "direct": direct()}
print(json.dumps(result))
"""


def _probe(tmp_path: Path, name: str, auth: dict | None) -> Path:
    folder = _tool(tmp_path / name, name, "python probe.py", **({"auth": auth} if auth else {}))
    (folder / "probe.py").write_text(PROBE)
    return folder


@docker
def test_a_tool_naming_a_provider_reaches_exactly_its_api_hosts_through_the_proxy(docker_api, tmp_path, runtime):
    from runner.pocket import provider_hosts
    from runner.sandbox import Sandbox
    from runner.settings import SandboxSettings, Settings

    slack_tool = load_manifest(_probe(tmp_path, "slackprobe", {"auth_provider": "slack", "scopes": ["chat:write"]}))
    offline_tool = load_manifest(_probe(tmp_path, "offlineprobe", None))
    hosts = lambda provider: provider_hosts(Settings(), provider)  # noqa: E731 - as Pocket gives it
    with Sandbox(SandboxSettings(pool_size=0, runtime=runtime), provider_hosts=hosts) as box:
        slack = box.run(slack_tool, {}, {})
        offline = box.run(offline_tool, {}, {})
    assert slack.ok, slack
    # Let through by the allow-list (here it then fails to resolve or to a non-global address: no internet).
    for host in ("slack.com", "files.slack.com"):
        assert "is not in the tool's allow-list" not in slack.value[host], slack.value
        assert slack.value[host].startswith(
            ("HTTP/1.1 200", "HTTP/1.1 403 Forbidden pocket egress proxy: ", "HTTP/1.1 502")
        )
    assert (
        slack.value["example.com"]
        == "HTTP/1.1 403 Forbidden pocket egress proxy: example.com:443 is not in the tool's allow-list"
    )
    assert slack.value["direct"] != "connected"  # no route out but the proxy
    assert offline.ok and offline.value["proxy"] is None and offline.value["direct"] != "connected"


def test_provider_egress_is_the_default_and_settings_turn_it_off_or_grant_more(tmp_path):
    from runner.sandbox.limits import resolve_limits
    from runner.settings import SandboxSettings, ToolLimits

    manifest = load_manifest(_probe(tmp_path, "slackprobe", {"auth_provider": "slack", "scopes": ["chat:write"]}))
    hosts = ("slack.com", "*.slack.com")
    assert resolve_limits(SandboxSettings(), manifest, provider_hosts=hosts).network == hosts
    assert resolve_limits(SandboxSettings(provider_egress=False), manifest, provider_hosts=hosts).network is False
    assert resolve_limits(SandboxSettings(allow_network=False), manifest, provider_hosts=hosts).network is False
    granted = SandboxSettings(tools={"slackprobe": ToolLimits(network=True)})
    assert resolve_limits(granted, manifest, provider_hosts=hosts).network is True
    hosts_only = SandboxSettings(tools={"slackprobe": ToolLimits.model_validate({"network": ["api.slack.com"]})})
    assert resolve_limits(hosts_only, manifest, provider_hosts=hosts).network == ("api.slack.com",)
    closed = SandboxSettings(tools={"slackprobe": ToolLimits(network=False)})
    assert resolve_limits(closed, manifest, provider_hosts=hosts).network is False
    assert resolve_limits(SandboxSettings(), manifest).network is False  # no provider hosts: offline
