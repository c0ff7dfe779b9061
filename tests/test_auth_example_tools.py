"""The Slack and GitHub example tools, run as the container runs them (the `run` command, the body on
stdin, the variables the runner passes) against a local stand-in of the Slack and GitHub APIs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from runner.auth import Authenticator
from runner.manifest import load_manifest

EXAMPLES = Path(__file__).resolve().parent.parent / "tools-example"
SLACK_TOKEN = "xoxp-example-user-token-42"
GITHUB_TOKEN = "gho_example_token_4242"


def run_tool(folder: Path, body: dict, environment: dict[str, str]) -> subprocess.CompletedProcess:
    manifest = load_manifest(folder)
    command = shlex.split(manifest.entrypoint.run)
    command[0] = sys.executable if command[0] == "python" else command[0]
    env = {"PATH": os.environ["PATH"], **manifest.variables, **environment}
    return subprocess.run(
        command, cwd=folder, input=json.dumps(body), capture_output=True, text=True, env=env, timeout=30
    )


def token_for(make_settings, provider: str, token: str, folder: Path) -> dict[str, str]:
    """The variables the runner hands this tool for a user who pasted `token`."""
    auth = Authenticator(make_settings())
    try:
        auth.login_with(provider, {"token": token}, user_id="alice", kind="token")
        return auth.environment(load_manifest(folder).auth, "alice")
    finally:
        auth.close()


def test_manifests_are_valid_and_declare_their_auth():
    for name, provider in (
        ("slack-get-messages", "slack"),
        ("github-list-issues", "github"),
        ("github-create-issue", "github"),
    ):
        manifest = load_manifest(EXAMPLES / name)
        assert manifest.auth.provider == provider and manifest.warnings == ()
    assert load_manifest(EXAMPLES / "slack-get-messages").name == "slack_get_messages"


def test_slack_get_messages(make_settings, stand_in):
    folder = EXAMPLES / "slack-get-messages"
    stand_in.json(
        "GET /api/conversations.history",
        {
            "ok": True,
            "messages": [{"user": "U1", "text": "hello", "ts": "1.1"}, {"bot_id": "B1", "text": "hi", "ts": "1.0"}],
            "has_more": True,
        },
    )
    env = token_for(make_settings, "slack", SLACK_TOKEN, folder)
    assert env == {"SLACK_BOT_TOKEN": SLACK_TOKEN}
    result = run_tool(folder, {"channel": "C123", "limit": 2}, {**env, "SLACK_API_URL": f"{stand_in.url}/api"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "channel": "C123",
        "messages": [{"user": "U1", "text": "hello", "ts": "1.1"}, {"user": "B1", "text": "hi", "ts": "1.0"}],
        "has_more": True,
    }
    request = stand_in.requests[-1]
    assert request.headers["authorization"] == f"Bearer {SLACK_TOKEN}"
    assert request.query == {"channel": "C123", "limit": "2"}


def test_slack_error_with_http_200_fails_without_leaking_the_token(stand_in):
    stand_in.json("GET /api/conversations.history", {"ok": False, "error": "not_in_channel"})
    result = run_tool(
        EXAMPLES / "slack-get-messages",
        {"channel": "C9"},
        {"SLACK_BOT_TOKEN": SLACK_TOKEN, "SLACK_API_URL": f"{stand_in.url}/api"},
    )
    assert result.returncode == 1 and "not_in_channel" in result.stderr
    assert SLACK_TOKEN not in result.stdout + result.stderr


def test_slack_without_a_token_says_so():
    result = run_tool(EXAMPLES / "slack-get-messages", {"channel": "C9"}, {})
    assert result.returncode == 1 and "SLACK_BOT_TOKEN is not set" in result.stderr


def test_github_list_issues_leaves_out_pull_requests(make_settings, stand_in):
    folder = EXAMPLES / "github-list-issues"
    stand_in.json(
        "GET /repos/ada/engine/issues",
        [
            {"number": 1, "title": "Bug", "state": "open", "user": {"login": "ada"}, "html_url": "https://x/1"},
            {"number": 2, "title": "PR", "state": "open", "user": {"login": "bob"}, "pull_request": {}},
        ],
    )
    env = token_for(make_settings, "github", GITHUB_TOKEN, folder)
    result = run_tool(folder, {"owner": "ada", "repo": "engine", "limit": 5}, {**env, "GITHUB_API_URL": stand_in.url})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"number": 1, "title": "Bug", "state": "open", "author": "ada", "url": "https://x/1"}
    ]
    request = stand_in.requests[-1]
    assert request.headers["authorization"] == f"Bearer {GITHUB_TOKEN}"
    assert request.query == {"state": "open", "per_page": "5"}


def test_github_create_issue_and_an_api_error(make_settings, stand_in):
    folder = EXAMPLES / "github-create-issue"
    stand_in.json(
        "POST /repos/ada/engine/issues",
        {"number": 7, "html_url": "https://github.com/ada/engine/issues/7", "state": "open"},
        status=201,
    )
    env = {**token_for(make_settings, "github", GITHUB_TOKEN, folder), "GITHUB_API_URL": stand_in.url}
    result = run_tool(folder, {"owner": "ada", "repo": "engine", "title": "It broke", "labels": ["bug"]}, env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["number"] == 7
    assert stand_in.requests[-1].json() == {"title": "It broke", "body": "", "labels": ["bug"]}
    stand_in.json("POST /repos/ada/private/issues", {"message": "Not Found"}, status=404)
    result = run_tool(folder, {"owner": "ada", "repo": "private", "title": "x"}, env)
    assert result.returncode == 1 and "HTTP 404: Not Found" in result.stderr
    assert GITHUB_TOKEN not in result.stderr


@pytest.mark.parametrize("variable", ["SLACK_API_URL"])
def test_api_url_must_be_http(variable):
    result = run_tool(
        EXAMPLES / "slack-get-messages", {"channel": "C"}, {"SLACK_BOT_TOKEN": "x", variable: "file:///etc/passwd"}
    )
    assert result.returncode == 1 and "must be an http(s) URL" in result.stderr
