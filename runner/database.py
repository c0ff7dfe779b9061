"""The database the runner keeps its rows in: an SQLite file (the embedded default) or a PostgreSQL server.

Everything that reads or writes rows goes through a `Database`: the credential store (runner/auth/store.py)
and whatever is kept beside it. Open one with `open_database`; what it offers is the same for both:

- `read()` and `transaction()`: a `Session` whose `execute(sql, params)` takes `?` placeholders in both
  dialects (no `?` or `%` inside SQL literals: pass values as parameters). A transaction commits when its block
  ends and rolls back when it raises. SQLite's is `BEGIN IMMEDIATE` (one writer at a time); PostgreSQL's is
  READ COMMITTED, so a read-then-write must be one statement: `INSERT ... ON CONFLICT`, or a conditional
  `UPDATE` whose `rowcount` says whether it won. `execute(sql, params)` on the database itself is one write
  statement committed on its own: a third of a transaction's round trips, for the audit record of every call.
- `create({table: statements})`: the tables missing, made once however many processes or machines start at
  once; a database user without the CREATE privilege works once they exist. Column types both accept: TEXT,
  INTEGER, DOUBLE PRECISION (never REAL: PostgreSQL's is 4 bytes, too coarse for epoch seconds) and
  `database.blob` for bytes (BLOB / BYTEA); `database.dialect` tells them apart where SQL must differ.
- `lock(name)`: exclusive per name across the threads of this process and across processes, re-entrant in a
  thread. SQLite: a file lock beside the database file. PostgreSQL: an advisory lock, so it holds across
  machines, and one whose holder dies (its connection gone) is released by the server.
- Every failure is a `DatabaseError` (a SettingsError) saying what went wrong, where, and what to do: a damaged
  file, a refused connection, a wrong password, a server that went away mid-operation (what was committed
  before stays; the interrupted transaction is rolled back). A password in a PostgreSQL URL is a secret:
  `where`, the errors and the repr show the URL without it.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import SecretStr

from runner.errors import DatabaseError, DatabaseUnavailableError
from runner.redaction import Redactor

if TYPE_CHECKING:
    import psycopg

LOCK_TIMEOUT_SECONDS = 120.0  # a lock (or a row) held longer by someone else fails the operation, saying so
CONNECT_TIMEOUT_SECONDS = 10  # PostgreSQL, unless the URL sets connect_timeout
BUSY_TIMEOUT_SECONDS = 30  # SQLite: how long a write waits for another process's
POSTGRES_SCHEMES = ("postgresql", "postgres")
_IDLE_CONNECTIONS = 4  # connections kept open between operations, per database


class Rows(Protocol):
    """What `Session.execute` returns: a DB-API cursor (sqlite3's or psycopg's)."""

    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Session:
    """One connection in use by one operation. `execute` takes `?` placeholders; a driver's error becomes a
    DatabaseError from `failed`."""

    def __init__(self, database: Database, connection: Any):
        self._database = database
        self.connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        try:
            return self._database._execute(self.connection, sql, tuple(params))
        except self._database.driver_errors as exc:
            raise self._database.failed(exc, self.connection) from None


class _NamedLock:
    """This process's part of `Database.lock(name)`: the threads queue here; the first in takes the
    cross-process lock, a re-entry by the holder only counts."""

    def __init__(self) -> None:
        self.threads = threading.RLock()
        self.depth = 0


class Dialect(enum.StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


class Database(ABC):
    """Rows in SQLite or PostgreSQL behind one interface (see the module docstring)."""

    dialect: Dialect
    blob: str  # the column type of bytes
    begin = "BEGIN"  # how a write transaction starts
    driver_errors: tuple[type[Exception], ...]  # what the driver raises, turned into DatabaseError by `failed`

    def __init__(self, label: str):
        self.label = label  # what the rows are, for messages: "credentials"
        self._named: dict[str, _NamedLock] = {}
        self._guard = threading.Lock()

    @property
    @abstractmethod
    def where(self) -> str:
        """The file or the URL (without its password), for messages."""

    @abstractmethod
    def _open(self) -> Any:
        """A connection, or a DatabaseError saying why there is none."""

    @abstractmethod
    def _release(self, connection: Any, healthy: bool) -> None:
        """Done with a connection: kept for the next operation or closed."""

    @abstractmethod
    def _execute(self, connection: Any, sql: str, params: tuple[Any, ...]) -> Rows: ...

    @abstractmethod
    def failed(self, exc: BaseException, connection: Any = None) -> DatabaseError:
        """The DatabaseError a person reads for a driver's error."""

    @abstractmethod
    def _exclusive(self, name: str) -> Any:
        """A context manager holding the cross-process lock `name`."""

    @abstractmethod
    def _rollback(self, session: Session) -> None:
        """Roll back the transaction a block raised in, unless the connection has already (or is gone)."""

    @contextmanager
    def _session(self) -> Iterator[Session]:
        connection = self._open()
        healthy = True
        try:
            yield Session(self, connection)
        except DatabaseError:
            healthy = False
            raise
        finally:
            self._release(connection, healthy)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads (each statement sees what is committed when it runs)."""
        with self._session() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction: committed when the block ends, rolled back when it raises."""
        with self._session() as session:
            session.execute(self.begin)
            try:
                yield session
            except BaseException:
                self._rollback(session)
                raise
            session.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """One write statement, committed on its own (both drivers are in autocommit mode outside transactions);
        its `rowcount` says how many rows it changed."""
        with self._session() as session:
            return session.execute(sql, params)

    def create(self, tables: Mapping[str, Sequence[str]]) -> None:
        """Create the tables missing: table name -> the statements that make it (CREATE TABLE, CREATE INDEX).
        Serialised across processes and machines; tables already there need no CREATE privilege."""
        with self.read() as session:
            missing = [name for name in tables if not self._exists(session, name)]
        if not missing:
            return
        with self.transaction() as session:
            self._serialise_schema(session)
            for name in missing:
                if not self._exists(session, name):
                    for statement in tables[name]:
                        session.execute(statement)

    @abstractmethod
    def _exists(self, session: Session, table: str) -> bool: ...

    def _serialise_schema(self, session: Session) -> None:
        return None

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Exclusive per `name` across threads, processes and (PostgreSQL) machines; re-entrant in a thread."""
        with self._guard:
            named = self._named.setdefault(name, _NamedLock())
        with named.threads:
            named.depth += 1
            try:
                if named.depth > 1:
                    yield
                else:
                    with self._exclusive(name):
                        yield
            finally:
                named.depth -= 1

    def close(self) -> None:
        """Close the connections kept between operations (a later operation opens new ones)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where!r})"


def _digest(name: str) -> bytes:
    return hashlib.sha256(b"pocket-runner lock\0" + name.encode()).digest()


class SQLiteDatabase(Database):
    """A file, private to this user (0600), in WAL mode: several processes of one machine use it at once, and
    an interrupted write leaves the previous rows intact. Locks are files in `locks/` beside it."""

    dialect = Dialect.SQLITE
    blob = "BLOB"
    begin = "BEGIN IMMEDIATE"
    driver_errors = (sqlite3.Error,)

    def __init__(self, path: Path, *, label: str, recovery: str = "start again", durable: bool = True):
        super().__init__(label)
        self.path = Path(path)
        self._recovery = recovery  # what to do once a damaged file is moved aside
        # FULL: a commit survives a power loss. NORMAL (in WAL mode) still survives the process being killed and
        # spares an fsync per commit, for rows written on every call (the audit log).
        self._synchronous = "FULL" if durable else "NORMAL"
        self._idle: list[sqlite3.Connection] = []  # connections kept between operations
        self._locks = self.path.parent / "locks"

    @property
    def where(self) -> str:
        return str(self.path)

    def _open(self) -> sqlite3.Connection:
        with self._guard:
            if self._idle:
                return self._idle.pop()
        try:
            # Used by one session at a time, but not always on the thread that opened it (it is kept idle).
            connection = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
            connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
        except sqlite3.Error as exc:
            raise self.failed(exc) from None
        return connection

    def _release(self, connection: sqlite3.Connection, healthy: bool) -> None:
        """Keep the connection for the next operation: opening one per operation, and closing the last one (which
        checkpoints the WAL), cost about 2 ms, paid on every call by the audit log."""
        if healthy and not connection.in_transaction:
            with self._guard:
                if len(self._idle) < _IDLE_CONNECTIONS:
                    self._idle.append(connection)
                    return
        connection.close()

    def close(self) -> None:
        with self._guard:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _execute(self, connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Rows:
        return connection.execute(sql, params)

    def _rollback(self, session: Session) -> None:
        if session.connection.in_transaction:  # SQLite rolls back by itself on some errors
            session.execute("ROLLBACK")

    def failed(self, exc: BaseException, connection: Any = None) -> DatabaseError:
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
            return DatabaseUnavailableError(
                f"the {self.label} file {self.path} stayed locked by another process for {BUSY_TIMEOUT_SECONDS} s "
                f"({text}); try again, and look for a pocket process that hangs"
            )
        if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
            return DatabaseError(
                f"cannot open the {self.label} file {self.path} ({text}): check that its folder exists and is "
                "this user's (data_dir in settings.toml, or POCKET_DATA_DIR)"
            )
        return DatabaseError(
            f"the {self.label} file {self.path} cannot be used ({text}): it is damaged, or not a pocket "
            f"{self.label} database. Move it aside (mv {self.path} {self.path}.broken; its -wal and -shm files "
            f"too, if any) and {self._recovery}; restore it from a backup instead to keep what it held"
        )

    def create(self, tables: Mapping[str, Sequence[str]]) -> None:
        # WAL is kept by the file; set outside any transaction, only when it is not WAL yet: setting it takes an
        # exclusive lock, which a process writing without pause may never let go of. One process at a time looks:
        # two opening a new file together both saw it unset, and the second waited on the first's writes.
        with self._exclusive("journal mode"), self.read() as session:
            if session.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                session.execute("PRAGMA journal_mode=WAL")
        super().create(tables)
        os.chmod(self.path, 0o600)

    def _exists(self, session: Session, table: str) -> bool:
        return (
            session.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
            is not None
        )

    @contextmanager
    def _exclusive(self, name: str) -> Iterator[None]:
        from filelock import FileLock, Timeout

        self._locks.mkdir(exist_ok=True, mode=0o700)
        path = self._locks / f"{_digest(name).hex()[:32]}.lock"
        try:
            held = FileLock(str(path), timeout=LOCK_TIMEOUT_SECONDS, mode=0o600)
            held.acquire()
        except Timeout:
            raise DatabaseUnavailableError(
                f"waited {LOCK_TIMEOUT_SECONDS:.0f} s for another process holding the lock {path} (of the "
                f"{self.label} in {self.path}); try again, and look for a pocket process that hangs"
            ) from None
        try:
            yield
        finally:
            held.release()


def postgres_url_problem(url: str) -> str | None:
    """Why `url` is not a PostgreSQL URL, or None. Never quotes the URL (it may carry a password)."""
    if urlsplit(url).scheme.lower() not in POSTGRES_SCHEMES:
        return (
            "must be a postgresql:// URL (postgresql://USER:PASSWORD@HOST:PORT/DATABASE); leave it unset for the "
            "SQLite file in data_dir"
        )
    return None


def _passwords(url: str) -> list[str]:
    """Every spelling of the password a URL carries (in its user part or as ?password=), raw and decoded."""
    parts = urlsplit(url)
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    query = parts.query
    found += re.findall(r"(?:^|&)password=([^&]*)", query) + parse_qs(query).get("password", [])
    return [form for secret in found if secret for form in {secret, unquote(secret)}]


class PostgresDatabase(Database):
    """A PostgreSQL server, shared by every runner replica given the same URL. Connections are opened on
    demand and a few kept between operations; one found dead when reused (a restarted server) is replaced."""

    dialect = Dialect.POSTGRESQL
    blob = "BYTEA"

    def __init__(self, url: SecretStr, *, label: str):
        super().__init__(label)
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        self._psycopg = psycopg
        self.driver_errors = (psycopg.Error,)
        self._url = url
        raw = url.get_secret_value()
        self._redact = Redactor.of(_passwords(raw))
        problem = postgres_url_problem(raw)
        if problem is not None:
            raise DatabaseError(f"credentials.database_url (or POCKET_CREDENTIALS__DATABASE_URL) {problem}")
        try:
            params, invalid = conninfo_to_dict(raw), None
        except psycopg.Error as exc:
            params, invalid = {}, self._invalid(exc)
        if invalid is not None:  # raised out here: the driver's error (quoting the URL) is not its __context__
            raise invalid
        self._options: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            self._options["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        host, port = params.get("host") or "localhost", params.get("port") or "5432"
        user = f"{params['user']}@" if params.get("user") else ""
        self._where = f"postgresql://{user}{host}:{port}/{params.get('dbname') or ''}"
        self._idle: list[psycopg.Connection[Any]] = []
        self._reached = False  # connected once: a server that refuses later is down, not misconfigured

    @property
    def where(self) -> str:
        return self._where

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            connection = self._psycopg.connect(self._url.get_secret_value(), **self._options)
            connection.execute(f"SET lock_timeout = {int(LOCK_TIMEOUT_SECONDS * 1000)}")
        except self._psycopg.Error as exc:
            raise self._unreachable(exc) from None
        self._reached = True
        return connection

    def _open(self) -> _Fresh:
        with self._guard:
            idle = self._idle.pop() if self._idle else None
        return _Fresh(idle, reused=True) if idle is not None else _Fresh(self._connect(), reused=False)

    def _release(self, connection: _Fresh, healthy: bool) -> None:
        inner = connection.inner
        idle = self._psycopg.pq.TransactionStatus.IDLE
        if healthy and not inner.closed and not inner.broken and inner.info.transaction_status == idle:
            with self._guard:
                if len(self._idle) < _IDLE_CONNECTIONS:
                    self._idle.append(inner)
                    return
        inner.close()

    def _rollback(self, session: Session) -> None:
        if not (session.connection.inner.closed or session.connection.inner.broken):
            session.execute("ROLLBACK")

    def _execute(self, connection: _Fresh, sql: str, params: tuple[Any, ...]) -> Rows:
        query = sql.replace("%", "%%").replace("?", "%s")
        try:
            return connection.inner.execute(query, params)
        except self._psycopg.OperationalError as exc:
            if not (connection.reused and connection.inner.broken):
                raise
            lost = exc
        # A kept connection the server closed meanwhile (restarted, or idle too long): this was its first
        # statement, so nothing was done yet; the same statement on a new connection, if the server answers.
        connection.inner.close()
        try:
            fresh = self._connect()
        except DatabaseError:
            raise self.failed(lost, connection) from None
        connection.inner, connection.reused = fresh, False
        return connection.inner.execute(query, params)

    def _invalid(self, exc: BaseException) -> DatabaseError:
        """A URL libpq cannot parse. Its message quotes the part it choked on, which may be a piece of the
        password (a malformed URL has no reliable password to redact): quotes are left out."""
        reason = re.sub(r'"[^"]*"', "...", " ".join(self._redact(str(exc)).split()))
        return DatabaseError(
            f"credentials.database_url (or POCKET_CREDENTIALS__DATABASE_URL) is not a valid PostgreSQL URL ({reason}):"
            " write it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE, with characters such as @ / : % in the user"
            " name or password percent-encoded (@ as %40)"
        )

    def _unreachable(self, exc: BaseException) -> DatabaseError:
        if isinstance(exc, self._psycopg.ProgrammingError) or "for connection option" in str(exc):
            return self._invalid(exc)  # a value libpq refuses: a port that is no number...
        reason = " ".join(self._redact(str(exc)).split())
        down = False  # a reason that may be an outage rather than a wrong setting
        if "password authentication failed" in reason or "no password supplied" in reason:
            what = "the server refused the user name or password"
        elif "does not exist" in reason:
            what = "the server has no such database or user"
        elif "refused" in reason:
            what, down = "nothing accepts connections there (is the server running, on that host and port?)", True
        elif "timeout" in reason.lower():
            what, down = "the server did not answer in time", True
        else:
            what, down = "the connection failed", True
        if down and self._reached:  # the same URL worked before: the server is down, no setting is wrong
            return DatabaseUnavailableError(
                f"cannot connect to the {self.label} database {self.where}, which answered before: {what} "
                f"({reason}); try again once the server is back"
            )
        return DatabaseError(
            f"cannot connect to the {self.label} database {self.where}: {what} ({reason}). Check "
            "credentials.database_url (or POCKET_CREDENTIALS__DATABASE_URL) and that the server is up"
        )

    def failed(self, exc: BaseException, connection: Any = None) -> DatabaseError:
        reason = " ".join(self._redact(str(exc)).split())
        inner = connection.inner if isinstance(connection, _Fresh) else None
        if isinstance(exc, self._psycopg.errors.LockNotAvailable):
            return DatabaseUnavailableError(
                f"waited {LOCK_TIMEOUT_SECONDS:.0f} s for a lock another runner holds in the {self.label} database "
                f"{self.where}; try again, and look for a runner that hangs"
            )
        if isinstance(exc, self._psycopg.OperationalError) and (inner is None or inner.broken or inner.closed):
            return DatabaseUnavailableError(
                f"the {self.label} database {self.where} stopped answering ({reason}): the operation did not "
                "complete, and what was stored before is kept; try again once the server is back"
            )
        return DatabaseError(f"the {self.label} database {self.where} refused an operation: {reason}")

    def _exists(self, session: Session, table: str) -> bool:
        return session.execute("SELECT to_regclass(?) IS NOT NULL", (table,)).fetchone()[0]

    def _serialise_schema(self, session: Session) -> None:
        # Two `CREATE TABLE IF NOT EXISTS` at once can both try to create the table: one waits for the other.
        session.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key("schema"),))

    @contextmanager
    def _exclusive(self, name: str) -> Iterator[None]:
        with self._session() as session:
            session.execute("SELECT pg_advisory_lock(?)", (_lock_key(name),))
            try:
                yield
            finally:
                inner = session.connection.inner
                if not (inner.closed or inner.broken):  # a lost connection released it on the server already
                    session.execute("SELECT pg_advisory_unlock(?)", (_lock_key(name),))

    def close(self) -> None:
        with self._guard:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class _Fresh:
    """A PostgreSQL connection and whether it was kept from an earlier operation (then possibly stale)."""

    def __init__(self, inner: psycopg.Connection[Any], *, reused: bool):
        self.inner = inner
        self.reused = reused


def _lock_key(name: str) -> int:
    """An advisory lock's 64-bit key."""
    return int.from_bytes(_digest(name)[:8], "big", signed=True)


def open_database(
    url: SecretStr | None, *, path: Path | None, label: str, recovery: str = "start again", durable: bool = True
) -> Database:
    """PostgreSQL at `url`, or the SQLite file `path` when there is none (`durable`: see SQLiteDatabase)."""
    if url is None:
        if path is None:
            raise ValueError("an SQLite database needs its path")
        return SQLiteDatabase(path, label=label, recovery=recovery, durable=durable)
    return PostgresDatabase(url, label=label)
