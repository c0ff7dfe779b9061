"""The encrypted credential store: nothing readable at rest, rows bound to their owner, safe writes."""

from __future__ import annotations

import base64
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from pydantic import SecretStr

from runner.auth.store import Credential, CredentialStore
from runner.errors import SettingsError

TOKEN = "xoxp-very-secret-token-0123456789"
REFRESH = "xoxe-1-refresh-secret-abcdefghij"


def credential(user: str = "alice", provider: str = "slack", token: str = TOKEN) -> Credential:
    return Credential(
        user_id=user,
        provider=provider,
        kind="oauth2",
        secrets={"token": SecretStr(token), "refresh_token": SecretStr(REFRESH)},
        scopes=("channels:history",),
        expires_at=time.time() + 3600,
    )


def test_round_trip_and_no_token_bytes_in_the_files(tmp_path):
    store = CredentialStore(tmp_path)
    store.put(credential())
    got = store.get("alice", "slack")
    assert got.value("token") == TOKEN and got.value("refresh_token") == REFRESH
    assert got.scopes == ("channels:history",)
    assert store.get("bob", "slack") is None
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in (TOKEN, REFRESH):
                assert secret.encode() not in data, path
                assert base64.b64encode(secret.encode()) not in data, path


def test_generated_key_file_is_private_and_refused_when_readable_by_others(tmp_path):
    CredentialStore(tmp_path).put(credential())
    key = tmp_path / "credentials" / "auth.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "credentials").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "credentials" / "credentials.sqlite3").stat().st_mode & 0o077 == 0
    assert CredentialStore(tmp_path).get("alice", "slack").value("token") == TOKEN  # same key reused
    key.chmod(0o644)
    with pytest.raises(SettingsError, match="owner only"):
        CredentialStore(tmp_path)


def test_key_from_settings_and_wrong_key_is_a_clear_error(tmp_path):
    key = SecretStr(base64.b64encode(os.urandom(32)).decode())
    CredentialStore(tmp_path, key).put(credential())
    assert not (tmp_path / "credentials" / "auth.key").exists()
    other = SecretStr(base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(SettingsError, match="cannot be decrypted") as caught:
        CredentialStore(tmp_path, other).get("alice", "slack")
    assert TOKEN not in str(caught.value)
    with pytest.raises(SettingsError, match="32"):
        CredentialStore(tmp_path, SecretStr("too-short"))


def test_a_row_copied_to_another_user_does_not_decrypt(tmp_path):
    store = CredentialStore(tmp_path)
    store.put(credential("alice"))
    store.put(credential("bob", token="bob-token-123456789"))
    db = sqlite3.connect(tmp_path / "credentials" / "credentials.sqlite3")
    sealed = db.execute("SELECT sealed FROM credentials WHERE user_id='alice'").fetchone()[0]
    db.execute("UPDATE credentials SET sealed=? WHERE user_id='bob'", (sealed,))
    db.commit()
    db.close()
    with pytest.raises(SettingsError, match="tampered"):
        store.get("bob", "slack")


def test_reprs_never_show_secrets(tmp_path):
    cred = credential()
    for text in (repr(cred), str(cred), repr(CredentialStore(tmp_path))):
        assert TOKEN not in text and REFRESH not in text
    assert "token" in repr(cred)  # names the fields it holds, not their values


def test_delete_and_entries(tmp_path):
    store = CredentialStore(tmp_path)
    store.put(credential("alice"))
    store.put(credential("bob", provider="github"))
    assert store.entries() == [("alice", "slack"), ("bob", "github")]
    assert store.entries("bob") == [("bob", "github")]
    assert store.delete("alice", "slack") is True and store.delete("alice", "slack") is False


_WRITER = """
import sys, time
from pydantic import SecretStr
from runner.auth.store import Credential, CredentialStore
store = CredentialStore(sys.argv[1])
i = 0
print("go", flush=True)
while True:
    i += 1
    store.put(Credential(user_id="u", provider="p", kind="token", secrets={"token": SecretStr("tok-%08d" % i)}))
"""


def test_a_writer_killed_mid_write_loses_nothing(tmp_path):
    store = CredentialStore(tmp_path)
    store.put(Credential(user_id="u", provider="p", kind="token", secrets={"token": SecretStr("tok-00000000")}))
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "go"
    time.sleep(0.5)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    value = CredentialStore(tmp_path).get("u", "p").value("token")
    assert value.startswith("tok-") and len(value) == 12  # the last committed write, whole


def test_expiry_margin_never_exceeds_half_the_lifetime():
    now = time.time()
    short = Credential(user_id="u", provider="p", kind="oauth2", secrets={}, expires_at=now + 60, obtained_at=now)
    assert not short.expires_within(300, now=now)  # a 60 s token is not refreshed on every use
    assert short.expires_within(300, now=now + 31)
    long = Credential(user_id="u", provider="p", kind="oauth2", secrets={}, expires_at=now + 3600, obtained_at=now)
    assert not long.expires_within(300, now=now + 3000) and long.expires_within(300, now=now + 3301)


def test_processes_creating_the_key_at_once_agree_on_it(tmp_path):
    script = (
        "import sys; from pydantic import SecretStr; from runner.auth.store import Credential, CredentialStore\n"
        "s = CredentialStore(sys.argv[1]); s.put(Credential(user_id=sys.argv[2], provider='p', kind='token',"
        " secrets={'token': SecretStr('t-' + sys.argv[2])}))\n"
    )
    children = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), f"u{i}"]) for i in range(6)]
    assert all(child.wait(60) == 0 for child in children)
    store = CredentialStore(tmp_path)
    assert [store.get(f"u{i}", "p").value("token") for i in range(6)] == [f"t-u{i}" for i in range(6)]
    assert sorted(p.name for p in (tmp_path / "credentials").iterdir() if p.name.startswith(".auth.key")) == []
