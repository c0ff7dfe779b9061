"""`pocket auth login|status|logout`: tokens read without echo or from stdin, OAuth through the browser."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from runner.cli import main
from tests.fixtures_oauth import CLIENT_ID, CLIENT_SECRET

SECRET = "serp-cli-secret-987654321"


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


def test_token_login_from_stdin_status_and_logout(tmp_path, callback_port, monkeypatch, capsys):
    files = write_settings(tmp_path, callback_port)
    monkeypatch.setattr(sys, "stdin", io.StringIO(SECRET + "\n"))
    assert main([*files, "auth", "login", "serpapi", "--user", "alice"]) == 0
    assert main([*files, "auth", "status", "--user", "alice", "--json"]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert rows == [
        {"user": "alice", "provider": "serpapi", "kind": "token", "status": "active", "scopes": [],
         "expires_at": None, "refreshable": False}
    ]  # fmt: skip
    assert SECRET not in out + err
    assert main([*files, "auth", "status"]) == 0  # user "default" has nothing
    assert "no stored credentials" in capsys.readouterr().out
    assert main([*files, "auth", "logout", "serpapi", "--user", "alice"]) == 0
    assert "forgot" in capsys.readouterr().err
    assert main([*files, "auth", "status", "--all-users", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_basic_login_reads_both_fields(tmp_path, callback_port, monkeypatch, capsys):
    files = write_settings(tmp_path, callback_port)
    monkeypatch.setattr(sys, "stdin", io.StringIO("ada@example.com\npass-123456\n"))
    assert main([*files, "auth", "login", "linkedin", "--handler", "linkedin-basicauth"]) == 0
    assert main([*files, "auth", "status"]) == 0
    out = capsys.readouterr().out
    assert "linkedin (default): basic, active" in out and "pass-123456" not in out


def test_unknown_provider_is_a_clear_error(tmp_path, callback_port, capsys):
    files = write_settings(tmp_path, callback_port)
    assert main([*files, "auth", "login", "nope"]) == 2
    assert "unknown auth provider 'nope'" in capsys.readouterr().err


def test_oauth_login_in_the_browser_then_logout_revokes(tmp_path, callback_port, oidc_server, person, capsys):
    files = write_settings(tmp_path, callback_port, oidc_server.issuer)
    command = [sys.executable, "-m", "runner.cli", *files, "auth", "login", "testidp", "--scope", "api:read"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
    url = child.stdout.readline().strip()
    assert url.startswith(oidc_server.issuer), child.stderr.read()
    assert person.visit(person.authorize(url)).status_code == 200
    _, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert "testidp is authorized for user 'default'" in err
    assert main([*files, "auth", "status", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["kind"] == "oauth2" and "api:read" in row["scopes"] and row["refreshable"] is True
    assert main([*files, "auth", "logout", "testidp"]) == 0
    assert "revoked at the provider" in capsys.readouterr().err
