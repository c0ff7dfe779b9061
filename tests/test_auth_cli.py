"""`pocket auth login|status|logout`: tokens read without echo or from stdin, OAuth through the browser."""

from __future__ import annotations

import base64
import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.cli import main
from tests.auth_helpers import pocket_auth_login, write_settings

SECRET = "serp-cli-secret-987654321"


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
    child = pocket_auth_login(files, "--scope", "api:read")
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


def test_a_denied_device_login_is_authorization_needed_exit_3(tmp_path, callback_port, oidc_server, person, capsys):
    """Like a denied browser consent: exit 3 saying so, nothing stored."""
    files = write_settings(tmp_path, callback_port, oidc_server.issuer)
    child = pocket_auth_login(files, "--device")
    first = child.stderr.readline()
    assert "on any device, open " in first, first + child.stderr.read()
    url = first.split("on any device, open ", 1)[1].strip()
    assert "enter the code" in child.stderr.readline()
    person.approve_device(url, deny=True)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 3, err
    assert "testidp was not authorized: failed: testidp: access_denied" in err and "Traceback" not in err
    assert main([*files, "auth", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # nothing stored


POCKET = str(Path(sys.executable).parent / "pocket")


def pocket(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKET_")}
    return subprocess.run(
        [POCKET, *args], input=stdin, capture_output=True, text=True, timeout=30, env=env, check=False
    )


def test_device_login_without_an_oauth_client_names_the_settings(tmp_path, callback_port):
    files = write_settings(tmp_path, callback_port)
    result = pocket(*files, "auth", "login", "github", "--device", stdin="ghp-not-asked-for\n")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "--device needs an OAuth client for GitHub" in result.stderr
    assert "[auth.github] client_id" in result.stderr and "POCKET_AUTH__GITHUB__CLIENT_ID" in result.stderr
    assert pocket(*files, "auth", "status", "--all-users", "--json").stdout.strip() == "[]"  # nothing stored
    token = pocket(*files, "auth", "login", "serpapi", "--device")
    assert token.returncode == 2 and "SerpApi has no OAuth sign-in, so no --device" in token.stderr


def test_login_falling_back_to_a_token_says_why(tmp_path, callback_port):
    files = write_settings(tmp_path, callback_port)
    result = pocket(*files, "auth", "login", "github", "--user", "ada", stdin="ghp-1234567890\n")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "pocket: no OAuth client is configured for GitHub, so this asks for a token; to sign in with OAuth instead, "
        "set [auth.github] client_id (and client_secret) in .secrets.toml, "
        "or POCKET_AUTH__GITHUB__CLIENT_ID (and __CLIENT_SECRET)"
    )
    assert lines[-1] == "pocket: stored the GitHub token credential of user 'ada' (encrypted)"
    only_tokens = pocket(*files, "auth", "login", "serpapi", stdin="serp-1234567890\n")
    assert only_tokens.returncode == 0 and "OAuth" not in only_tokens.stderr  # nothing to fall back from


def test_no_value_at_the_prompt_is_bad_input(tmp_path, callback_port):
    files = write_settings(tmp_path, callback_port)
    piped = pocket(*files, "auth", "login", "serpapi", stdin="")
    assert piped.returncode == 2
    assert "expected a value on stdin for SerpApi token or api key" in piped.stderr
    # Ctrl-D at a terminal's no-echo prompt. A new session has no controlling terminal: getpass uses stdin, our pty.
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKET_")}
    child = subprocess.Popen(
        [POCKET, *files, "auth", "login", "serpapi"],
        stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(terminal)
    try:
        prompt, deadline = b"", time.monotonic() + 20
        while not prompt.endswith(b"SerpApi token or api key: ") and time.monotonic() < deadline:
            if select.select([child.stderr], [], [], 0.5)[0]:  # the prompt goes to stderr; no newline after it
                chunk = os.read(child.stderr.fileno(), 1024)
                if not chunk:
                    break  # the child exited before prompting: the assertions below show why
                prompt += chunk
        time.sleep(0.2)  # getpass has turned echo off (flushing input) before it prints the prompt; be safe
        os.write(controller, b"\x04")
        _, rest = child.communicate(timeout=20)
    finally:
        child.kill()
        os.close(controller)
    err = (prompt + rest).decode()
    assert child.returncode == 2, err
    assert "Traceback" not in err and "internal error" not in err
    assert "no value entered for SerpApi token or api key" in err


def stand_in_provider(tmp_path: Path, callback_port: int, stand_in) -> list[str]:
    """Settings files defining "acme", an OAuth provider whose endpoints are the stand-in's."""
    files = write_settings(tmp_path, callback_port)
    Path(files[3]).write_text(
        f'[auth.acme]\nauthorization_url = "{stand_in.url}/authorize"\ntoken_url = "{stand_in.url}/token"\n'
        f'revocation_url = "{stand_in.url}/revoke"\nclient_id = "acme-client"\nclient_secret = "acme-secret"\n'
    )
    return files


def authorize_acme(files: list[str], stand_in, user: str = "default") -> None:
    """The OAuth flow, played as the provider's redirect back to the callback, leaving a stored grant."""
    from urllib.parse import parse_qs, urlencode, urlsplit

    import httpx

    from runner.auth import Authenticator
    from runner.settings import load_settings

    stand_in.json("POST /token", {"access_token": "acme-access-1", "refresh_token": "acme-refresh-1", "expires_in": 60})
    auth = Authenticator(load_settings(files[1], files[3]))
    try:
        query = parse_qs(urlsplit(auth.authorization_url("acme", user_id=user)).query)
        callback = query["redirect_uri"][0] + "?" + urlencode({"code": "c", "state": query["state"][0]})
        assert httpx.get(callback).status_code == 200
    finally:
        auth.close()


def test_logout_revokes_each_token_and_says_which_may_still_be_live(tmp_path, callback_port, stand_in, capsys):
    files = stand_in_provider(tmp_path, callback_port, stand_in)
    authorize_acme(files, stand_in)

    def revoke(request):
        if request.form()["token_type_hint"] == "refresh_token":  # RFC 7009 2.2.1: a legitimate answer
            return 400, {"Content-Type": "application/json"}, b'{"error": "unsupported_token_type"}'
        return 200, {}, b""

    stand_in.routes["POST /revoke"] = revoke
    assert main([*files, "auth", "logout", "acme"]) == 0
    asked = [r.form()["token"] for r in stand_in.requests if r.path == "/revoke"]
    assert asked == ["acme-refresh-1", "acme-access-1"]  # the access token is revoked even so
    err = capsys.readouterr().err
    assert "forgot the acme credential of user 'default'" in err
    assert "revoked the access token at the provider" in err
    assert "not the refresh token (unsupported_token_type): it may still work at acme" in err
    assert main([*files, "auth", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_oauth_login_granted_without_a_scope_says_which_and_exits_3(tmp_path, callback_port, oidc_server, person):
    files = write_settings(tmp_path, callback_port, oidc_server.issuer)
    child = pocket_auth_login(files, "--scope", "api:admin")
    url = child.stdout.readline().strip()
    assert url.startswith(oidc_server.issuer), child.stderr.read()
    assert person.visit(person.authorize(url)).status_code == 200
    _, err = child.communicate(timeout=30)
    assert child.returncode == 3, err
    assert "testidp is authorized for user 'default', but not for everything asked (partial: declined api:admin)" in err


def login_token(files: list[str], provider: str, user: str, value: str, monkeypatch) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(value + "\n"))
    return main([*files, "auth", "login", provider, "--user", user])


def test_a_deleted_key_file_is_never_silently_replaced(tmp_path, callback_port, monkeypatch, capsys):
    files = write_settings(tmp_path, callback_port)
    for provider, user in (("serpapi", "alice"), ("serpapi", "bob"), ("github", "alice")):
        assert login_token(files, provider, user, f"{provider}-{user}-key-123456", monkeypatch) == 0
    key = tmp_path / "data" / "credentials" / "auth.key"
    key.unlink()
    capsys.readouterr()

    assert main([*files, "auth", "status", "--all-users"]) == 0  # every row is reported, none hides another
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["github (alice)", "serpapi (alice)", "serpapi (bob)"]
    for line in lines:
        assert "unreadable:" in line and f"cannot be read: the key file {key} is missing" in line
        assert "pocket auth logout" in line
    assert not key.exists()

    assert login_token(files, "serpapi", "carol", "serpapi-carol-key-1", monkeypatch) == 2
    err = capsys.readouterr().err
    assert f"the key file {key} is missing, and 3 stored credentials were encrypted with it" in err
    assert "Restore the key file, or forget them" in err and not key.exists()

    assert main([*files, "auth", "logout", "serpapi", "--user", "alice"]) == 0
    assert main([*files, "auth", "logout", "github", "--user", "alice"]) == 0
    err = capsys.readouterr().err
    assert "forgot the serpapi credential of user 'alice'" in err and "could not be decrypted" in err
    # The last unreadable row is bob's own: logging in again replaces it, under a new key.
    assert login_token(files, "serpapi", "bob", "serpapi-bob-key-new", monkeypatch) == 0
    assert key.exists()
    assert main([*files, "auth", "status", "--all-users"]) == 0
    assert capsys.readouterr().out.splitlines() == ["serpapi (bob): token, active, no expiry"]


def test_rows_sealed_with_another_key_are_reported_forgotten_and_replaced(
    tmp_path, callback_port, stand_in, monkeypatch, capsys
):
    files = stand_in_provider(tmp_path, callback_port, stand_in)
    authorize_acme(files, stand_in, user="alice")
    assert login_token(files, "serpapi", "bob", "serpapi-bob-key-123456", monkeypatch) == 0
    key = tmp_path / "data" / "credentials" / "auth.key"
    key.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")  # another key: the rows no longer decrypt
    capsys.readouterr()

    assert main([*files, "auth", "status", "--all-users"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("unreadable" in line and "cannot be decrypted" in line for line in lines)

    # A key that reads none of the other rows is not theirs: nothing is written with it, rows under two keys
    # would lose one set for good.
    assert login_token(files, "serpapi", "carol", "serpapi-carol-key-1", monkeypatch) == 2
    assert "decrypts none of the 2 stored credentials" in capsys.readouterr().err
    assert main([*files, "auth", "logout", "serpapi", "--user", "bob"]) == 0
    assert "forgot the serpapi credential of user 'bob'" in capsys.readouterr().err
    authorize_acme(files, stand_in, user="alice")  # a new consent replaces the one row it cannot read
    assert main([*files, "auth", "status", "--all-users"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("acme (alice): oauth2, active")


def test_a_credentials_folder_of_another_user_is_a_clear_settings_error(tmp_path, callback_port):
    """A folder `nobody` owns, and a CLI without the power to chmod what it does not own (root less
    CAP_FOWNER: what any other user is): the person is told which folder and what to set."""
    import pwd
    import shutil

    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and util-linux's setpriv, to drop the power to chmod another user's folder")
    files = write_settings(tmp_path, callback_port)
    folder = tmp_path / "data" / "credentials"
    folder.mkdir(parents=True)
    os.chown(folder, pwd.getpwnam("nobody").pw_uid, -1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKET_")}
    result = subprocess.run(
        [setpriv, "--bounding-set=-fowner", "--", POCKET, *files, "auth", "status"],
        capture_output=True, text=True, timeout=30, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "internal error" not in result.stderr
    assert f"cannot use {folder} for credentials" in result.stderr
    assert "it belongs to another user" in result.stderr and "Set data_dir" in result.stderr
