"""What a real `pocket` process writes to its own stdout and stderr never holds a token, the authorization
code or the state (beyond the one authorization URL a person must open).

The runner does not use Python's logging, so capturing log records proves nothing: these tests read the
file descriptors of a child process, where print(), tracebacks and uvicorn's access log would all land.
"""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import pytest

from runner.auth import Authenticator
from runner.settings import load_settings
from tests.auth_helpers import make_tool, pocket_auth_login, write_settings
from tests.fixtures_oauth import CLIENT_SECRET
from tests.helpers import environment, free_port, wait_listening


def secrets_in(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value and value in text]


def test_oauth_login_writes_no_token_code_or_state(tmp_path, callback_port, oidc_server, person):
    """`pocket auth login`: the CLI and its callback server, which receives the code and state."""
    files = write_settings(tmp_path, callback_port, oidc_server.issuer)
    child = pocket_auth_login(files, "--scope", "api:read")
    try:
        url = child.stdout.readline().strip()
        assert url.startswith(oidc_server.issuer), child.stderr.read()
        callback = person.authorize(url)
        query = parse_qs(urlsplit(callback).query)
        assert person.visit(callback).status_code == 200
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, err
    auth = Authenticator(load_settings(files[1], files[3]))
    try:
        stored = auth.store.get("default", "testidp")
        secrets = {
            "access token": stored.value("token"),
            "refresh token": stored.value("refresh_token"),
            "authorization code": query["code"][0],
            "state": query["state"][0],
            "client secret": CLIENT_SECRET,
        }
    finally:
        auth.close()
    assert secrets["access token"] and secrets["refresh token"] and len(secrets["state"]) >= 16
    assert query["state"][0] in url  # the URL the person opens carries the state, as OAuth has it
    assert out.strip() == "", out  # the URL was the only line on stdout
    assert secrets_in(err, secrets) == [], err
    assert "testidp is authorized for user 'default'" in err


TOKEN = "serp-process-output-5c1e9a7d"
BODY = '{"echo": true, "variable": "SERPAPI_TOKEN"}'  # the tool prints the token on stdout and on stderr


def _child_environment(tmp_path) -> dict[str, str]:
    return {
        **environment(),  # without the local pocket process: a first `pocket invoke` runs its call itself anyway
        "POCKET_AUTH__SERPAPI__TOKEN": TOKEN,
        "POCKET_CACHE_DIR": str(tmp_path / "cache"),
        "POCKET_DATA_DIR": str(tmp_path / "data"),
    }


@pytest.mark.docker
def test_pocket_invoke_writes_no_token_though_the_tool_prints_it(tmp_path, docker_api):
    tool = make_tool(tmp_path, "search", "serpapi", [])
    ran = subprocess.run(
        [sys.executable, "-m", "runner.cli", "invoke", str(tool), "search", "--body", BODY],
        capture_output=True, text=True, timeout=300, env=_child_environment(tmp_path), check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert '"echo": "[redacted]"' in ran.stdout  # the tool did print it: the runner masked it
    assert TOKEN not in ran.stdout and TOKEN not in ran.stderr


@pytest.mark.docker
def test_pocket_serve_over_http_writes_no_token_though_the_tool_prints_it(tmp_path, docker_api):
    import anyio
    from mcp import Client

    tool = make_tool(tmp_path, "search", "serpapi", [])
    port = free_port()
    command = [sys.executable, "-m", "runner.cli", "serve", str(tool), "--http", "--no-auth", "--port", str(port)]
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_environment(tmp_path)
    )
    try:
        assert wait_listening(port, server, timeout=30), server.stderr.read() if server.poll() is not None else ""

        async def call() -> str:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                result = await client.call_tool("search", json.loads(BODY))
                return result.content[0].text

        answer = anyio.run(call)
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    assert '"echo": "[redacted]"' in answer
    assert TOKEN not in answer and TOKEN not in out and TOKEN not in err
    assert "POST /mcp" in err or f"127.0.0.1:{port}" in err  # its own log was captured, and holds no token
