"""The encrypted credential store: nothing readable at rest, rows bound to their owner, safe writes. Each test
that is not about the SQLite file itself runs on both backends (`store_backend`: SQLite, then PostgreSQL)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import SecretStr

from runner import database
from runner.auth.store import Credential, CredentialStore
from runner.errors import DatabaseError, DatabaseUnavailableError, SettingsError
from tests.fixtures_postgres import PASSWORD, StoreBackend
from tests.helpers import REPO

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


def test_round_trip_and_no_token_bytes_at_rest(store_backend: StoreBackend, tmp_path):
    store = store_backend.open()
    store.put(credential())
    got = store.get("alice", "slack")
    assert got.value("token") == TOKEN and got.value("refresh_token") == REFRESH
    assert got.scopes == ("channels:history",)
    assert store.get("bob", "slack") is None
    stored = [bytes(row[0]) for row in store_backend.rows("SELECT sealed FROM credentials")]
    files = [path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()]  # SQLite's, and nothing else
    assert len(stored) == 1 and (files if store_backend.name == "sqlite" else not files)
    for data in stored + files:
        for secret in (TOKEN, REFRESH):
            assert secret.encode() not in data
            assert base64.b64encode(secret.encode()) not in data


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


def test_key_from_settings_and_wrong_key_is_a_clear_error(store_backend: StoreBackend, tmp_path):
    key = SecretStr(base64.b64encode(os.urandom(32)).decode())
    store_backend.open(key).put(credential())
    assert not (tmp_path / "credentials" / "auth.key").exists()
    other = SecretStr(base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(SettingsError, match="cannot be decrypted") as caught:
        store_backend.open(other).get("alice", "slack")
    assert TOKEN not in str(caught.value) and PASSWORD not in str(caught.value)
    with pytest.raises(SettingsError, match="32"):
        store_backend.open(SecretStr("too-short"))


def test_a_row_copied_to_another_user_does_not_decrypt(store_backend: StoreBackend):
    store = store_backend.open()
    store.put(credential("alice"))
    store.put(credential("bob", token="bob-token-123456789"))
    [(sealed,)] = store_backend.rows("SELECT sealed FROM credentials WHERE user_id = ?", ("alice",))
    store_backend.rows("UPDATE credentials SET sealed = ? WHERE user_id = ?", (bytes(sealed), "bob"))
    with pytest.raises(SettingsError, match="tampered"):
        store.get("bob", "slack")


def test_reprs_never_show_secrets(store_backend: StoreBackend):
    cred = credential()
    store = store_backend.open()
    for text in (repr(cred), str(cred), repr(store), repr(store.database), store.where):
        assert TOKEN not in text and REFRESH not in text
        assert PASSWORD not in text and "s3cret" not in text  # the database URL's password, in any spelling
    assert "token" in repr(cred)  # names the fields it holds, not their values


def test_delete_and_entries(store_backend: StoreBackend):
    store = store_backend.open()
    store.put(credential("alice"))
    store.put(credential("bob", provider="github"))
    assert store.entries() == [("alice", "slack"), ("bob", "github")]
    assert store.entries("bob") == [("bob", "github")]
    assert store.delete("alice", "slack") is True and store.delete("alice", "slack") is False


_WRITER = """
import sys, time
from pydantic import SecretStr
from runner.auth.store import Credential
from tests.fixtures_postgres import StoreBackend
store = StoreBackend.from_argv(sys.argv[1:4]).open()
i = 0
print("go", flush=True)
while True:
    i += 1
    store.put(Credential(user_id="u", provider="p", kind="token", secrets={"token": SecretStr("tok-%08d" % i)}))
"""


def test_a_writer_killed_mid_write_loses_nothing(store_backend: StoreBackend):
    store = store_backend.open()
    store.put(Credential(user_id="u", provider="p", kind="token", secrets={"token": SecretStr("tok-00000000")}))
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, *store_backend.argv()], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert writer.stdout.readline().strip() == "go"
    deadline = time.monotonic() + 60
    while store.get("u", "p").value("token") < "tok-00000050" and time.monotonic() < deadline:
        time.sleep(0.01)  # until it has written for a while: then it is killed in the middle of one write or another
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    value = store_backend.open().get("u", "p").value("token")
    assert value.startswith("tok-") and len(value) == 12 and value >= "tok-00000050"  # the last committed write


def test_expiry_margin_never_exceeds_half_the_lifetime():
    now = time.time()
    short = Credential(user_id="u", provider="p", kind="oauth2", secrets={}, expires_at=now + 60, obtained_at=now)
    assert not short.expires_within(300, now=now)  # a 60 s token is not refreshed on every use
    assert short.expires_within(300, now=now + 31)
    long = Credential(user_id="u", provider="p", kind="oauth2", secrets={}, expires_at=now + 3600, obtained_at=now)
    assert not long.expires_within(300, now=now + 3000) and long.expires_within(300, now=now + 3301)


_OPENER = """
import sys
from pydantic import SecretStr
from runner.auth.store import Credential
from tests.fixtures_postgres import StoreBackend
store = StoreBackend.from_argv(sys.argv[1:4]).open()
store.put(Credential(user_id=sys.argv[4], provider="p", kind="token", secrets={"token": SecretStr("t-" + sys.argv[4])}))
"""


def test_processes_opening_a_new_store_at_once_agree_on_it(store_backend: StoreBackend, tmp_path):
    """Six processes create the store at once: the key file (SQLite) or the tables (PostgreSQL) once, no error."""
    argv = store_backend.argv()
    children = [subprocess.Popen([sys.executable, "-c", _OPENER, *argv, f"u{i}"], cwd=REPO) for i in range(6)]
    assert all(child.wait(120) == 0 for child in children)
    store = store_backend.open()
    assert [store.get(f"u{i}", "p").value("token") for i in range(6)] == [f"t-u{i}" for i in range(6)]
    if store_backend.name == "sqlite":
        assert sorted(p.name for p in (tmp_path / "credentials").iterdir() if p.name.startswith(".auth.key")) == []


_HOLDER = """
import sys
from tests.fixtures_postgres import StoreBackend
store = StoreBackend.from_argv(sys.argv[1:4]).open()
with store.lock("alice", "slack"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_lock_holder_that_dies_releases_the_lock(store_backend: StoreBackend):
    """While a process holds (user, provider), no other takes it; killed, it lets go (no waiting for a timeout)."""
    store = store_backend.open()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, *store_backend.argv()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with ThreadPoolExecutor(1) as pool:
            taken = pool.submit(lambda: store.lock("alice", "slack").__enter__())
            with store.lock("alice", "other-provider"):  # another (user, provider) is not held up
                pass
            assert not taken.done()
            os.kill(holder.pid, signal.SIGKILL)
            taken.result(timeout=60)
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_held_too_long_elsewhere_fails_saying_so(store_backend: StoreBackend, monkeypatch):
    monkeypatch.setattr(database, "LOCK_TIMEOUT_SECONDS", 1.0)  # instead of 120 s
    store = store_backend.open()
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True, "cwd": REPO}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, *store_backend.argv()], **pipes)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            DatabaseError, match=r"waited 1 s for .*; try again, and look for a .* that hangs"
        ) as caught:
            with store.lock("alice", "slack"):
                pass
        assert isinstance(caught.value, DatabaseUnavailableError) and caught.value.exit_code == 1  # not the settings'
    finally:
        holder.kill()
        holder.wait()
    with store.lock("alice", "slack"):  # free again
        pass


_SQLITE_WRITER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")  # SQLite's write lock, held as by a process hanging mid-write
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_credentials_file_another_process_keeps_locked_fails_saying_so(tmp_path, monkeypatch):
    monkeypatch.setattr(database, "BUSY_TIMEOUT_SECONDS", 1)  # instead of 30 s; before any connection is opened
    store = CredentialStore(tmp_path)
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    holder = subprocess.Popen([sys.executable, "-c", _SQLITE_WRITER, str(store.database.path)], **pipes)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            DatabaseUnavailableError, match=r"stayed locked by another process for 1 s .*; try again, and look for a"
        ) as caught:
            store.put_request("the-state", "alice", "slack", b"{}", time.time() + 600)
        assert caught.value.exit_code == 1  # the database is down for now, not misconfigured
    finally:
        holder.kill()
        holder.wait()
    store.put_request("the-state", "alice", "slack", b"{}", time.time() + 600)  # free again
    assert store.request_progress("the-state") == (False, None)


_CLAIMER = """
import sys
from tests.fixtures_postgres import StoreBackend
store = StoreBackend.from_argv(sys.argv[1:4]).open()
print("ready", flush=True)
sys.stdin.readline()
print("claimed" if store.claim_request("the-state") is not None else "refused", flush=True)
"""


def test_a_shared_request_is_claimed_once_by_processes_racing_for_it(store_backend: StoreBackend):
    store = store_backend.open()
    store.put_request("the-state", "alice", "slack", b'{"verifier": "v"}', time.time() + 600)
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True, "cwd": REPO}
    children = [subprocess.Popen([sys.executable, "-c", _CLAIMER, *store_backend.argv()], **pipes) for _ in range(4)]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    for child in children:  # all at once
        child.stdin.write("go\n")
        child.stdin.flush()
    answers = sorted(child.communicate(timeout=60)[0].strip() for child in children)
    assert answers == ["claimed", "refused", "refused", "refused"]
    assert store.request_progress("the-state") == (True, None)
    store.end_request("the-state", json.dumps({"state": "granted"}))
    assert store.request_progress("the-state") == (True, '{"state": "granted"}')
    assert store_backend.rows("SELECT sealed FROM requests") == [(b"",)]  # the code verifier is wiped
