"""A real PostgreSQL server for the store tests, started by the tests themselves.

Debian's `postgresql` package (scripts/setup-test-deps.sh installs it) provides initdb and postgres; the tests
make a cluster in a temporary folder and run it on 127.0.0.1 on a free port, with password (SCRAM)
authentication. postgres refuses to run as root, so as root the server runs as the `postgres` user the
package creates (or nobody). Each server is stopped by the pid of the process the tests started.

- `postgres_server`: one server for the session. `postgres_url`: a database of the test's own on it.
- `own_postgres`: a server of the test's own, which it may stop and start again (a database going away).
- `store_backend`: the credential store tests run once on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import SecretStr

from runner.auth.store import CredentialStore
from tests.helpers import free_port

USER = "pocket"
# The password has characters a URL must percent-encode: tests check neither spelling ever shows.
PASSWORD = "pg-s3cret/p@ss%word"
_databases = count(1)


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        pytest.fail("PostgreSQL's server programs are missing: run scripts/setup-test-deps.sh (Debian's postgresql)")
    return found[-1].parent


def _run_as() -> pwd.struct_passwd | None:
    """The account the server runs as: ours, or (as root, which postgres refuses) postgres or nobody."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.fail("running as root, and no postgres or nobody account to run the PostgreSQL server as")


class PostgresServer:
    """A cluster in a temporary folder, its postgres process started by us (stopped by its pid)."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.account = _run_as()
        self.folder = Path(tempfile.mkdtemp(prefix="pocket-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        password_file = self.folder / "password"
        password_file.write_text(PASSWORD + "\n")
        if self.account is not None:
            os.chown(self.folder, self.account.pw_uid, self.account.pw_gid)
            os.chown(password_file, self.account.pw_uid, self.account.pw_gid)
        self._as_account(
            [
                str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={password_file}",
                "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            ],
            what="initdb",
        )  # fmt: skip
        password_file.unlink()
        self.start()

    def _as_account(self, command: list[str], what: str) -> None:
        user = {} if self.account is None else {"user": self.account.pw_uid, "group": self.account.pw_gid}
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, **user)
        if result.returncode != 0:
            pytest.fail(f"{what} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")

    def start(self) -> None:
        """Start the server (again, on the same port and data) and wait until it accepts connections."""
        user = {} if self.account is None else {"user": self.account.pw_uid, "group": self.account.pw_gid}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bin / "postgres"), "-D", str(self.data), "-c", "listen_addresses=127.0.0.1",
                    "-c", f"port={self.port}", "-c", f"unix_socket_directories={self.folder}",
                    "-c", "fsync=off",  # a throwaway cluster: a clean stop still writes everything
                ],
                stdout=log, stderr=log, start_new_session=True, **user,
            )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + 120
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"postgres exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=5).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    pytest.fail(f"postgres did not accept connections in 120 s:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.1)

    def url(self, database: str, password: str = PASSWORD, port: int | None = None) -> str:
        return f"postgresql://{USER}:{quote(password, safe='')}@127.0.0.1:{port or self.port}/{database}"

    def admin(self, database: str = "postgres") -> Any:
        """An autocommit connection of the tests' own (not the runner's)."""
        import psycopg

        return psycopg.connect(self.url(database), autocommit=True)

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"pocket_test_{os.getpid()}_{next(_databases)}"
        with self.admin() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """A fast shutdown (SIGINT: sessions cut, everything committed written), by the pid we started."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL (with the password) of a database of this test's own."""
    return postgres_server.create_database()


@pytest.fixture
def own_postgres() -> Iterator[Callable[[], PostgresServer]]:
    """Start a server of this test's own (it may stop and start it); each is removed at the end."""
    started: list[PostgresServer] = []

    def start() -> PostgresServer:
        server = PostgresServer()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


KEY = SecretStr(base64.b64encode(bytes(range(32))).decode())  # a fixed encryption key (PostgreSQL requires one)


@dataclass
class StoreBackend:
    """Where a test's credential store keeps its rows: an SQLite file in `data_dir` (its key in a key file) or
    a PostgreSQL database of the test's own (`url`, with the key in settings, as that requires)."""

    name: str
    data_dir: Path
    url: str | None = None

    def open(self, key: SecretStr | None = None) -> CredentialStore:
        if self.url is None:
            return CredentialStore(self.data_dir, key)
        return CredentialStore(self.data_dir, key or KEY, database_url=SecretStr(self.url))

    def argv(self) -> list[str]:
        """How a child process opens the same store: `StoreBackend.from_argv(sys.argv[1:4])`."""
        return [self.name, str(self.data_dir), self.url or ""]

    @classmethod
    def from_argv(cls, argv: list[str]) -> StoreBackend:
        return cls(argv[0], Path(argv[1]), argv[2] or None)

    def settings(self) -> dict[str, Any]:
        """The [credentials] entries that select this backend."""
        return {} if self.url is None else {"database_url": self.url, "encryption_key": KEY.get_secret_value()}

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows as stored, read (or written) behind the store's back, through a Database of the tests' own."""
        database = self.open().database
        try:
            with database.transaction() as session:
                cursor = session.execute(sql, params)
                return cursor.fetchall() if sql.lstrip().upper().startswith("SELECT") else []
        finally:
            database.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> StoreBackend:
    """Each test using it runs against both: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        return StoreBackend("sqlite", tmp_path)
    return StoreBackend("postgresql", tmp_path, request.getfixturevalue("postgres_url"))
