"""Many runner replicas sharing one PostgreSQL credential store (`credentials.database_url`), against a real
server the tests start: one refresh across replicas, a consent completed by another replica than the one that
opened it, a database that goes away mid-call, and connection problems named without the password.

A replica here is a separate process with a data folder of its own (another machine, as far as files go): only
the database and the settings (the same URL and encryption key) are shared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from runner.auth import Authenticator
from runner.auth.store import Credential, CredentialStore
from runner.errors import DatabaseError, SettingsError
from runner.function_tools import function_tool
from runner.invocation import Outcome
from runner.manifest import AuthSpec
from runner.pocket import Pocket
from runner.settings import load_settings
from tests.auth_helpers import SPEC
from tests.fixtures_oauth import CLIENT_ID, CLIENT_SECRET
from tests.fixtures_postgres import KEY, PASSWORD, USER, PostgresServer
from tests.helpers import REPO, free_port

SERPAPI = AuthSpec(auth_provider="serpapi")
SECRET_SPELLINGS = (PASSWORD, quote(PASSWORD, safe=""), "s3cret", "p@ss", "ss%word")  # and pieces of it


def assert_no_password(*texts: str) -> None:
    for text in texts:
        for spelling in SECRET_SPELLINGS:
            assert spelling not in text


def write_files(folder: Path, url: str, *, issuer: str = "", callback_port: int = 0, public: str = "") -> list[str]:
    """settings.toml (this replica's data folder and callback port) and the .secrets.toml every replica shares
    (the database URL and its password, the encryption key, the OAuth client)."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = folder / "settings.toml"
    lines = [
        f'data_dir = "{folder / "data"}"',
        f'cache_dir = "{folder / "cache"}"',
        "[credentials]",
        f"callback_port = {callback_port}",
        "refresh_margin_seconds = 1.0",
    ]
    if public:
        lines.append(f'public_base_url = "{public}"')
    settings.write_text("\n".join(lines) + "\n")
    secrets = folder / ".secrets.toml"
    text = f'[credentials]\ndatabase_url = "{url}"\nencryption_key = "{KEY.get_secret_value()}"\n'
    if issuer:
        text += (
            f'[auth.testidp]\nissuer = "{issuer}"\nclient_id = "{CLIENT_ID}"\nclient_secret = "{CLIENT_SECRET}"\n'
            'default_scopes = ["openid", "offline_access"]\nauthorization_params = { prompt = "consent" }\n'
            'env = { TESTIDP_TOKEN = "{token}" }\n'
        )
    secrets.write_text(text)
    return [str(settings), str(secrets)]


# -- configuration and connection problems --------------------------------------------------------------


def test_a_shared_database_needs_the_encryption_key(tmp_path, postgres_url):
    with pytest.raises(SettingsError, match=r"set credentials\.encryption_key too") as caught:
        CredentialStore(tmp_path, database_url=SecretStr(postgres_url))
    assert_no_password(str(caught.value))
    assert not (tmp_path / "credentials").exists()  # no key file made on the side


def test_a_database_url_that_is_not_postgresql_is_refused_without_quoting_it(tmp_path):
    (tmp_path / ".secrets.toml").write_text(f'[credentials]\ndatabase_url = "mysql://{USER}:{PASSWORD}@db/x"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings(directory=tmp_path)
    message = str(caught.value)
    assert "credentials.database_url (or POCKET_CREDENTIALS__DATABASE_URL): Value error, must be a postgresql://" in (
        message
    )
    assert_no_password(message)


def _wrong(server: PostgresServer, how: str) -> tuple[str, str]:
    """A database URL wrong in one way, and what the error must say about it."""
    if how == "refused":
        return server.url("postgres", port=free_port()), "nothing accepts connections there"
    if how == "password":
        return server.url("postgres", password=PASSWORD + "x"), "the server refused the user name or password"
    if how == "database":
        return server.url("no_such_database"), "the server has no such database or user"
    if how == "port":
        return server.url("postgres").replace("127.0.0.1:", "127.0.0.1:port"), "is not a valid PostgreSQL URL"
    # The password as typed, not percent-encoded: libpq quotes the piece after its "@" in its complaint.
    return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{server.port}/postgres", "is not a valid PostgreSQL URL"


@pytest.mark.parametrize("how", ["refused", "password", "database", "port", "unencoded"])
def test_connection_problems_are_named_clearly_and_never_show_the_password(
    tmp_path, postgres_server, cli, callback_port, how
):
    url, said = _wrong(postgres_server, how)
    files = write_files(tmp_path, url, callback_port=callback_port)
    ran = cli("--settings", files[0], "--secrets", files[1], "auth", "status", "--all-users")
    assert ran.returncode == 2, ran.stderr
    assert said in ran.stderr and "Traceback" not in ran.stderr and "internal error" not in ran.stderr
    if "valid" not in said:
        assert f"postgresql://{USER}@127.0.0.1:" in ran.stderr  # where it tried, without the password
        assert "Check credentials.database_url" in ran.stderr
    assert_no_password(ran.stdout, ran.stderr)
    with pytest.raises(DatabaseError) as caught:  # nor in what the error holds on to (an error tracker shows it)
        CredentialStore(tmp_path, KEY, database_url=SecretStr(url))
    error: BaseException | None = caught.value
    while error is not None:
        assert_no_password(str(error), repr(error))
        error = error.__cause__ or error.__context__


def test_a_runner_user_without_create_privilege_uses_the_tables_once_they_exist(tmp_path, postgres_server):
    """Least privilege: the tables made once by their owner, the runners' user may only read and write rows."""
    first, empty = postgres_server.create_database(), postgres_server.create_database()
    CredentialStore(tmp_path / "owner", KEY, database_url=SecretStr(first))  # the owner makes the tables
    database, role = urlsplit(first).path.lstrip("/"), f"runner_{os.getpid()}"
    with postgres_server.admin(database) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'runner-pw-123456'")
        admin.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON credentials, requests TO {role}")
    as_runner = f"postgresql://{role}:runner-pw-123456@127.0.0.1:{postgres_server.port}"
    store = CredentialStore(tmp_path / "runner", KEY, database_url=SecretStr(f"{as_runner}/{database}"))
    store.put(Credential("alice", "serpapi", "token", {"token": SecretStr("serp-alice-123456")}))
    assert store.get("alice", "serpapi").value("token") == "serp-alice-123456"
    store.put_request("s", "alice", "serpapi", b"{}", time.time() + 60)
    assert store.claim_request("s") == b"{}"
    with pytest.raises(DatabaseError) as caught:  # where nobody made them, it cannot: said, with the reason
        CredentialStore(tmp_path / "runner", KEY, database_url=SecretStr(f"{as_runner}/{urlsplit(empty).path[1:]}"))
    assert "refused an operation: permission denied for schema public" in str(caught.value)
    assert "runner-pw-123456" not in str(caught.value)


# -- a database that goes away mid-call ------------------------------------------------------------------


def _wait_blocked(server: PostgresServer, waiting: int) -> None:
    """Until `waiting` sessions of the runner wait for the lock the test holds on the credentials table."""
    with server.admin("pocket_gone") as watcher:
        deadline = time.monotonic() + 60
        while True:
            [(count,)] = watcher.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'credentials'::regclass"
            ).fetchall()
            if count >= waiting:
                return
            assert time.monotonic() < deadline, "the runner's calls never reached the database"
            time.sleep(0.02)


def test_a_database_that_goes_away_mid_call_gives_a_clear_error_and_loses_nothing(tmp_path, own_postgres):
    server = own_postgres()
    with server.admin() as admin:
        admin.execute("CREATE DATABASE pocket_gone")
    files = write_files(tmp_path, server.url("pocket_gone"))
    auth = Authenticator(load_settings(*files))
    try:
        auth.store.put(Credential("alice", "serpapi", "token", {"token": SecretStr("serp-alice-original")}))
        assert auth.environment(SERPAPI, "alice") == {"SERPAPI_TOKEN": "serp-alice-original"}
        errors: dict[str, BaseException] = {}

        def attempt(name: str, action: Any) -> None:
            try:
                action()
            except BaseException as exc:
                errors[name] = exc

        blocker = server.admin("pocket_gone")
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE credentials IN ACCESS EXCLUSIVE MODE")  # the calls below wait on it
        replacement = Credential("alice", "serpapi", "token", {"token": SecretStr("serp-alice-replacement")})
        calls = [
            threading.Thread(target=attempt, args=("call", lambda: auth.environment(SERPAPI, "alice"))),
            threading.Thread(target=attempt, args=("write", lambda: auth.store.put(replacement))),
        ]
        for call in calls:
            call.start()
        _wait_blocked(server, 2)
        server.stop()  # mid-call: both are inside the database, waiting
        for call in calls:
            call.join(60)
        assert set(errors) == {"call", "write"}
        for error in errors.values():
            assert isinstance(error, DatabaseError)
            assert f"the credentials database postgresql://{USER}@127.0.0.1:{server.port}/pocket_gone" in str(error)
            assert "stopped answering" in str(error) and "what was stored before is kept" in str(error)
            assert_no_password(str(error), repr(error))

        with pytest.raises(DatabaseError, match="nothing accepts connections there"):  # while it is down
            auth.environment(SERPAPI, "alice")
        server.start()
        # The same runner, without a restart: the original credential, whole; the interrupted write did not land.
        assert auth.environment(SERPAPI, "alice") == {"SERPAPI_TOKEN": "serp-alice-original"}
        auth.store.put(replacement)
        assert auth.environment(SERPAPI, "alice") == {"SERPAPI_TOKEN": "serp-alice-replacement"}
    finally:
        auth.close()


def test_calls_while_the_credentials_database_is_down_are_tool_failures_and_the_same_pocket_recovers(
    tmp_path, own_postgres
):
    """Nothing in the settings is wrong once the same URL has worked: a call while the server is down fails as a
    tool failure that says to try again (a model retries it; bad input would say its arguments were wrong),
    whether the call finds its kept connection dead or the server refusing a new one; the Pocket serves again
    once the server is back, without a restart."""
    server = own_postgres()
    with server.admin() as admin:
        admin.execute("CREATE DATABASE pocket_down")

    @function_tool(auth_provider="serpapi")
    def search(query: str, SERPAPI_TOKEN: str) -> str:
        """Search."""
        return f"{query} with a token of {len(SERPAPI_TOKEN)} characters"

    with Pocket([search], settings=load_settings(*write_files(tmp_path, server.url("pocket_down")))) as pocket:
        token = {"token": SecretStr("serp-alice-123456")}
        pocket.authenticator.store.put(Credential("alice", "serpapi", "token", token))
        assert pocket.invoke("search", {"query": "a"}, user_id="alice").value == "a with a token of 17 characters"
        server.stop()
        down = [pocket.invoke("search", {"query": "b"}, user_id="alice") for _ in range(2)]
        server.start()
        back = pocket.invoke("search", {"query": "c"}, user_id="alice")
    for result in down:
        assert result.outcome is Outcome.TOOL_FAILED and result.outcome.exit_code == 1, result.error
        assert f"postgresql://{USER}@127.0.0.1:{server.port}/pocket_down" in result.error
        assert "try again once the server is back" in result.error
        assert_no_password(result.error or "")
    assert "stopped answering" in down[0].error  # its kept connection died under it
    assert "which answered before: nothing accepts connections there" in down[1].error  # a new one is refused
    assert back.ok and back.value == "c with a token of 17 characters"


# -- replicas ----------------------------------------------------------------------------------------------

REPLICA = """
import hashlib, json, sys, threading
from concurrent.futures import ThreadPoolExecutor
from runner.auth import Authenticator
from runner.errors import AuthRequiredError
from runner.manifest import AuthSpec
from runner.settings import load_settings

auth = Authenticator(load_settings(sys.argv[1], sys.argv[2]))
spec = AuthSpec(auth_provider="testidp", scopes=["api:read"])
print(json.dumps("ready"), flush=True)
for line in sys.stdin:
    command = json.loads(line)
    if command == "url":
        try:
            auth.environment(spec, "alice")
            answer = None
        except AuthRequiredError as exc:
            answer = exc.url
    elif command == "wait":
        answer = auth.wait(timeout=60, user_id="alice")
    else:  # calls: N threads at once, each asking for alice's token; the sha256 of each token received
        barrier = threading.Barrier(command["calls"])
        def call(_):
            barrier.wait()
            try:
                return hashlib.sha256(auth.environment(spec, "alice")["TESTIDP_TOKEN"].encode()).hexdigest()
            except Exception as exc:  # reported, for the test to show
                return f"{type(exc).__name__}: {exc}"
        with ThreadPoolExecutor(command["calls"]) as pool:
            answer = list(pool.map(call, range(command["calls"])))
    print(json.dumps(answer), flush=True)
auth.close()
"""


class Replica:
    """A runner replica in a process of its own, driven line by line."""

    def __init__(self, files: list[str]):
        env = {k: v for k, v in os.environ.items() if not k.startswith("POCKET_")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", REPLICA, *files],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
        )  # fmt: skip
        assert self.answer() == "ready"

    def send(self, command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def answer(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(30)
            raise AssertionError(f"the replica exited ({self.process.returncode}): {self.process.stderr.read()}")
        return json.loads(line)

    def ask(self, command: Any) -> Any:
        self.send(command)
        return self.answer()

    def close(self) -> str:
        """Stop it (it closes its Authenticator); what it wrote to stderr."""
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.stderr.read()


@pytest.fixture
def replicas():
    started: list[Replica] = []

    def start(files: list[str]) -> Replica:
        started.append(Replica(files))
        return started[-1]

    yield start
    for replica in started:
        replica.close()


@pytest.fixture
def slow_server(own_oidc_server):
    """The real authorization server, its token endpoint answering after 1 s (real ones hash client secrets)."""
    return own_oidc_server(TOKEN_DELAY_MS="1000")


def test_two_replicas_of_ten_calls_at_token_expiry_refresh_exactly_once(
    tmp_path, postgres_url, callback_port, slow_server, person, replicas
):
    first = replicas(write_files(tmp_path / "a", postgres_url, issuer=slow_server.issuer, callback_port=callback_port))
    second = replicas(write_files(tmp_path / "b", postgres_url, issuer=slow_server.issuer))
    page = person.visit(person.authorize(first.ask("url")))
    assert page.status_code == 200, page.text
    assert first.ask("wait") == {"testidp": "authorized"}
    store = CredentialStore(tmp_path / "test", KEY, database_url=SecretStr(postgres_url))
    granted = store.get("alice", "testidp")
    store.put(replace(granted, expires_at=time.time() - 1))  # at expiry: every call must have a fresh token

    mark = slow_server.mark()
    first.send({"calls": 10})
    second.send({"calls": 10})
    tokens = first.answer() + second.answer()
    assert len(tokens) == 20 and len(set(tokens)) == 1, set(tokens)  # everyone got the one new token
    assert slow_server.events(mark) == ["grant.success refresh_token"]  # exactly one refresh, at the real server
    refreshed = store.get("alice", "testidp")
    assert refreshed.value("refresh_token") != granted.value("refresh_token")  # the rotated one was stored
    assert refreshed.expires_at is not None and refreshed.expires_at > time.time()
    assert slow_server.introspect(refreshed.value("token"))["active"] is True
    assert not (tmp_path / "a" / "data" / "credentials").exists()  # nothing kept on a replica's disk


def test_a_consent_opened_on_one_replica_is_completed_by_the_callback_landing_on_the_other(
    tmp_path, postgres_url, callback_port, slow_server, person, replicas
):
    """Behind a load balancer (public_base_url) each replica listens on its own port; the browser's callback
    reaches whichever the balancer picks: here the one that did not open the request."""
    public = f"http://127.0.0.1:{callback_port}"
    ports = {name: free_port() for name in ("a", "b")}
    issuer = slow_server.issuer
    opener, other = (
        replicas(write_files(tmp_path / name, postgres_url, issuer=issuer, callback_port=port, public=public))
        for name, port in ports.items()
    )
    url = opener.ask("url")
    assert other.ask("url") != url  # alice's call on the other replica too: it listens (and has its own link)
    callback = urlsplit(person.authorize(url))
    assert f"{callback.scheme}://{callback.netloc}" == public
    mark = slow_server.mark()
    # The balancer forwards to the other replica, keeping the Host the browser used.
    page = httpx.get(
        f"http://127.0.0.1:{ports['b']}{callback.path}?{callback.query}", headers={"Host": callback.netloc}, timeout=60
    )
    assert page.status_code == 200 and "testidp is connected" in page.text, page.text
    assert slow_server.events(mark) == ["grant.success authorization_code"]  # exchanged once, by the other replica
    assert opener.ask("wait") == {"testidp": "authorized"}  # the opener learns it from the database
    assert len(set(opener.ask({"calls": 2}) + other.ask({"calls": 2}))) == 1  # both hand out the one grant
    replayed = httpx.get(
        f"http://127.0.0.1:{ports['a']}{callback.path}?{callback.query}", headers={"Host": callback.netloc}, timeout=60
    )
    assert replayed.status_code == 400  # the state was used: a replay on the opener is refused
    assert slow_server.events(mark) == ["grant.success authorization_code"]


def test_the_shared_store_is_what_the_authenticator_uses(tmp_path, postgres_url, make_settings):
    """`[credentials] database_url` reaches the store: a credential saved through one Authenticator is read by
    another with another data folder, and a process's files hold no credential."""
    settings = make_settings(database_url=postgres_url, encryption_key=KEY.get_secret_value())
    elsewhere = make_settings(
        data_dir=tmp_path / "elsewhere", database_url=postgres_url, encryption_key=KEY.get_secret_value()
    )
    first, second = Authenticator(settings), Authenticator(elsewhere)
    try:
        first.store.put(Credential("bob", "serpapi", "token", {"token": SecretStr("serp-bob-123456")}))
        assert second.environment(SERPAPI, "bob") == {"SERPAPI_TOKEN": "serp-bob-123456"}
        assert second.store.where == first.store.where and second.store.where.startswith("postgresql://pocket@")
        assert SPEC.provider == "testidp"
    finally:
        first.close()
        second.close()
    assert not any(path.is_file() for path in tmp_path.rglob("*") if "credentials" in path.parts)
