"""What a real `pocket` process writes to its own stdout and stderr never holds a token, the authorization
code or the state (beyond the one authorization URL a person must open).

The runner does not use Python's logging, so capturing log records proves nothing: these tests read the
file descriptors of a child process, where print(), tracebacks and uvicorn's access log would all land.
"""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

from runner.auth import Authenticator
from runner.settings import load_settings
from tests.auth_helpers import write_settings
from tests.fixtures_oauth import CLIENT_SECRET


def secrets_in(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value and value in text]


def test_oauth_login_writes_no_token_code_or_state(tmp_path, callback_port, oidc_server, person):
    """`pocket auth login`: the CLI and its callback server, which receives the code and state."""
    files = write_settings(tmp_path, callback_port, oidc_server.issuer)
    command = [sys.executable, "-m", "runner.cli", *files, "auth", "login", "testidp", "--scope", "api:read"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
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
