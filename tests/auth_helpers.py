"""What the auth tests share: the test provider's spec, consent driven to its end, settings files for the CLI,
and a tool that reports a hash of the token it was handed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

from runner.auth import Authenticator
from runner.errors import AuthRequiredError
from runner.manifest import AuthSpec
from tests.fixtures_oauth import CLIENT_ID, CLIENT_SECRET

SPEC = AuthSpec(auth_provider="testidp", scopes=["api:read"])


def url_from(auth: Authenticator, spec: AuthSpec = SPEC, user: str = "default") -> str:
    with pytest.raises(AuthRequiredError) as caught:
        auth.environment(spec, user)
    assert caught.value.provider == "testidp"
    assert caught.value.url and caught.value.url in str(caught.value)
    return caught.value.url


def authorize(auth: Authenticator, person, spec: AuthSpec = SPEC, user: str = "default") -> str:
    """Run the whole consent as `person` and return the access token the tool would receive."""
    page = person.visit(person.authorize(url_from(auth, spec, user)))
    assert page.status_code == 200, page.text
    return auth.environment(spec, user)["TESTIDP_TOKEN"]


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


def pocket_auth_login(files: list[str], *args: str) -> subprocess.Popen[str]:
    """`pocket auth login testidp ARGS...` as a real process, with the settings `files` (from write_settings),
    its stdout and stderr piped."""
    command = [sys.executable, "-m", "runner.cli", *files, "auth", "login", "testidp", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)


def write_settings(tmp_path: Path, callback_port: int, issuer: str | None = None) -> list[str]:
    settings = tmp_path / "settings.toml"
    settings.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'cache_dir = "{tmp_path / "cache"}"\n'
        f"[credentials]\ncallback_port = {callback_port}\n"
    )
    secrets = tmp_path / ".secrets.toml"
    if issuer:
        secrets.write_text(
            f'[auth.testidp]\nissuer = "{issuer}"\nclient_id = "{CLIENT_ID}"\nclient_secret = "{CLIENT_SECRET}"\n'
            'default_scopes = ["openid", "offline_access"]\nauthorization_params = { prompt = "consent" }\n'
        )
    else:
        secrets.write_text("")
    return ["--settings", str(settings), "--secrets", str(secrets)]


TOOL_CODE = """
import hashlib, json, os, sys
body = json.load(sys.stdin)
token = os.environ.get(body.get("variable", "TESTIDP_TOKEN"), "")
print(f"debug: using {token}", file=sys.stderr)
print(json.dumps({"sha256": hashlib.sha256(token.encode()).hexdigest(), "echo": token if body.get("echo") else ""}))
"""


def make_tool(root: Path, name: str, provider: str, scopes: list[str], handler: str | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    auth = {"auth_provider": provider, "scopes": scopes} | ({"auth_handler": handler} if handler else {})
    manifest = {
        "tool": {
            "name": name,
            "description": f"Report a hash of the {provider} token.",
            "inputSchema": {
                "type": "object",
                "properties": {"echo": {"type": "boolean"}, "variable": {"type": "string"}},
            },
        },
        "language": "python",
        "entrypoint": {"run": "python main.py"},
        "auth": auth,
    }
    (folder / "pocket.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(TOOL_CODE)
    return folder


def containers_created(docker_api, tool: str, since: float) -> list[str]:
    """The ids of the containers the engine created for `tool` since then (even if already removed)."""
    events = docker_api.events(
        since=f"{since:.9f}",
        until=f"{time.time():.9f}",
        filters={"type": "container", "event": "create", "label": f"pocket-runner.tool={tool}"},
        decode=True,
    )
    return [event["id"] for event in events]
