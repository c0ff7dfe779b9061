"""A credentials file that is damaged or not ours, and a key that is not the rows' key: said, never a crash."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from runner.auth.store import Credential, CredentialStore
from runner.invocation import Outcome
from runner.pocket import Pocket
from tests.auth_helpers import make_tool, write_settings
from tests.fixtures_postgres import StoreBackend


def pocket_cli(files: list[str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKET_")}
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *files, *args],
        input=stdin, capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip


def damage(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "text":
        path.write_text("user,provider,token\nalice,serpapi,nothing here\n")
    elif how == "truncated":
        path.write_bytes(raw[: len(raw) // 3])
    else:  # the 100-byte header overwritten
        path.write_bytes(b"\0" * 100 + raw[100:])


@pytest.mark.parametrize("how", ["text", "truncated", "header"])
def test_a_damaged_credentials_file_is_named_with_what_to_do(tmp_path, callback_port, make_settings, how):
    files = write_settings(tmp_path, callback_port)
    store = CredentialStore(tmp_path / "data")
    for user in range(60):  # enough rows for a file of many pages, so a truncated one loses some
        store.put(Credential(f"u{user}", "serpapi", "token", {"token": SecretStr("serp-key-123456" * 20)}))
    status = pocket_cli(files, "auth", "status", "--all-users")
    assert status.returncode == 0 and len(status.stdout.splitlines()) == 60, status.stderr
    database = store.database.path
    store.close()  # found damaged by the next process: none of ours holds it (its WAL checkpointed)
    damage(database, how)

    for command in (["auth", "status", "--all-users"], ["auth", "login", "serpapi", "--user", "u59"]):
        result = pocket_cli(files, *command, stdin="serp-key-654321\n")
        assert result.returncode == 2, result.stderr
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr
        assert f"the credentials file {database} cannot be used" in result.stderr
        assert f"Move it aside (mv {database} {database}.broken" in result.stderr
        assert "pocket auth login PROVIDER" in result.stderr

    settings = make_settings(data_dir=tmp_path / "data")
    with Pocket([str(make_tool(tmp_path / "tools", "search", "serpapi", []))], settings=settings) as pocket:
        result = pocket.invoke("search", {}, user_id="u1")
    assert result.outcome is Outcome.BAD_INPUT and not result.ok
    assert f"the credentials file {database} cannot be used" in (result.error or "")


def test_a_login_under_another_encryption_key_writes_nothing(tmp_path, callback_port):
    files = write_settings(tmp_path, callback_port)
    assert pocket_cli(files, "auth", "login", "serpapi", "--user", "alice", stdin="serp-alice-123456\n").returncode == 0
    settings = Path(files[1])
    right = settings.read_text()
    other_key = base64.b64encode(os.urandom(32)).decode()
    settings.write_text(right + f'encryption_key = "{other_key}"\n')  # under [credentials]

    login = pocket_cli(files, "auth", "login", "serpapi", "--user", "bob", stdin="serp-bob-123456\n")
    assert login.returncode == 2, login.stderr
    assert "cannot store a serpapi credential for user 'bob'" in login.stderr
    assert "the encryption key (credentials.encryption_key) decrypts none of the 1 stored credential" in login.stderr
    assert "Use that key again" in login.stderr

    settings.write_text(right)  # the right key again: alice's row reads, and no row of bob's was written
    status = pocket_cli(files, "auth", "status", "--all-users")
    assert status.stdout.splitlines() == ["serpapi (alice): token, active, no expiry"], status.stderr


def test_one_tampered_row_stops_no_other_write(store_backend: StoreBackend):
    store = store_backend.open()
    for user in ("alice", "bob"):
        store.put(Credential(user, "serpapi", "token", {"token": SecretStr(f"serp-{user}-123456")}))
    # alice's row altered: it no longer decrypts, bob's still does
    store_backend.rows("UPDATE credentials SET sealed = ? WHERE user_id = ?", (bytes(64), "alice"))
    reopened = store_backend.open()
    reopened.put(Credential("bob", "serpapi", "token", {"token": SecretStr("serp-bob-refreshed")}))
    reopened.put(Credential("alice", "serpapi", "token", {"token": SecretStr("serp-alice-new")}))  # replaced
    assert reopened.get("alice", "serpapi").value("token") == "serp-alice-new"
