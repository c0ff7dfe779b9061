"""The audit log: one `AuditRecord` per invocation, from every surface, kept in the credential store's database.

A record says who ran what and where it went: time, user, tool, source and resolved commit, image, backend,
outcome, exit code, duration, bytes in and out, the credential provider and scopes the tool uses, the hosts
it reached and those refused, and the trace it belongs to. Never a body, a result, an error text (a tool's
stderr may quote either) or a credential value.

Storage: table `audit` of the credentials database (runner/database.py): the SQLite file (WAL) by default, the
PostgreSQL server of `credentials.database_url` when set, shared by replicas. Each record is one short
transaction of its own, so a writer killed mid-record loses nothing already written; several processes write
at once. Records older than `[audit] retention_days` are deleted as new ones are written.
"""

from __future__ import annotations

import atexit
import contextvars
import dataclasses
import functools
import json
import queue
import re
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from runner.errors import PocketError
from runner.invocation import Invocation, NetworkAccess, NetworkReceipt, Outcome
from runner.redaction import url_credentials

if TYPE_CHECKING:
    from runner.database import Database
    from runner.manifest import AuthSpec
    from runner.settings import Settings

PRUNE_EVERY = 3600.0  # seconds between deletions of records past the retention
BATCH = 500  # records per INSERT statement (4 parameters each: well under SQLite's 32766)
SCHEMA = {
    "audit": (
        "CREATE TABLE IF NOT EXISTS audit ("
        " at DOUBLE PRECISION NOT NULL, user_id TEXT NOT NULL, tool TEXT NOT NULL, record TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",
    )
}


class Surface(StrEnum):
    """Where a call came from."""

    PYTHON = "python"
    CLI = "cli"
    MCP = "mcp"
    LANGCHAIN = "langchain"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


_SURFACE: contextvars.ContextVar[Surface] = contextvars.ContextVar("pocket_surface")


@contextmanager
def called_from(where: Surface) -> Iterator[None]:
    """The calls in the block come from `where` (the MCP server, the LangChain tools...): records say so."""
    token = _SURFACE.set(where)
    try:
        yield
    finally:
        _SURFACE.reset(token)


def surface() -> Surface | None:
    """The surface the current call comes from, when one said so."""
    return _SURFACE.get(None)


@dataclass(frozen=True)
class AuditRecord:
    """One invocation, as the audit log keeps it."""

    at: float  # when the call started, epoch seconds
    user: str
    tool: str
    surface: Surface
    backend: str  # "docker/runc", "docker/runsc" or "function"
    outcome: Outcome
    duration_seconds: float
    bytes_in: int  # the body, as JSON
    bytes_out: int  # what the agent got back, as text
    source: str | None = None  # the folder or git URL the tool came from
    commit: str | None = None  # the resolved git commit of a git source
    image: str | None = None  # the id of the image the call ran in
    exit_code: int | None = None
    provider: str | None = None
    scopes: tuple[str, ...] = ()
    network: NetworkReceipt | None = None
    trace_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """As JSON types. Field by field, not `dataclasses.asdict`: that deep-copies the receipt first, a tenth
        of a millisecond on every call."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data.update(
            surface=self.surface.value,
            outcome=self.outcome.value,
            scopes=list(self.scopes),
            network=self.network.to_dict() if self.network else None,
        )
        return data

    def span_attributes(self) -> dict[str, Any]:
        """What the call's span carries of the record (semantic names where OpenTelemetry has them)."""
        network = self.network
        return {
            "pocket.outcome": self.outcome.value,
            "pocket.surface": self.surface.value,
            "pocket.backend": self.backend,
            "pocket.tool.source": self.source,
            "pocket.tool.commit": self.commit,
            "container.image.id": self.image,
            "process.exit.code": self.exit_code,
            "pocket.auth.provider": self.provider,
            "pocket.auth.scopes": self.scopes or None,
            "pocket.bytes_in": self.bytes_in,
            "pocket.bytes_out": self.bytes_out,
            "pocket.network.access": network.access.value if network else None,
            "pocket.network.reached": tuple(f"{h.host}:{h.port}" for h in network.reached) if network else None,
            "pocket.network.refused": tuple(f"{r.host}:{r.port}" for r in network.refused) if network else None,
            "pocket.network.bytes_sent": sum(h.bytes_sent for h in network.reached) if network else None,
            "pocket.network.bytes_received": sum(h.bytes_received for h in network.reached) if network else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditRecord:
        fields = {f.name for f in dataclasses.fields(cls)}
        known = {key: value for key, value in data.items() if key in fields}
        return cls(
            **{
                **known,
                "surface": Surface(known["surface"]),
                "outcome": Outcome(known["outcome"]),
                "scopes": tuple(known.get("scopes") or ()),
                "network": NetworkReceipt.from_dict(known["network"]) if known.get("network") else None,
            }
        )


def record_of(
    invocation: Invocation,
    *,
    at: float,
    duration: float,
    user: str,
    body: Any,
    surface: Surface,
    backend: str,
    origin: tuple[str | None, str | None],
    auth: AuthSpec | None,
    trace_id: str | None,
) -> AuditRecord:
    """The record of one finished call: sizes and facts about it, never its body or result themselves."""
    return AuditRecord(
        at=at,
        user=user,
        tool=invocation.tool,
        surface=surface,
        backend=backend,
        outcome=invocation.outcome,
        duration_seconds=round(duration, 6),
        bytes_in=len(_ANY_JSON.encode(body).encode()),
        bytes_out=len(invocation.text().encode()),
        source=_shown_source(origin[0]) if origin[0] else None,
        commit=origin[1],
        image=invocation.image,
        exit_code=invocation.exit_code,
        provider=auth.provider if auth else None,
        scopes=tuple(auth.scopes) if auth else (),
        network=invocation.network or (NetworkReceipt(NetworkAccess.IN_PROCESS) if backend == "function" else None),
        trace_id=trace_id,
    )


_ANY_JSON = json.JSONEncoder(default=str)  # one: json.dumps with an option makes a new one per call


@functools.lru_cache(maxsize=256)
def _shown_source(source: str) -> str:
    """A tool's source as records show it: a git URL may carry a token. The same few sources on every call."""
    return url_credentials(source)


class AuditLog:
    """Writes and reads audit records. Thread-safe; any number of processes may share the file."""

    def __init__(self, database: Database, *, retention_days: float = 0.0):
        self.database = database
        self.database.create(SCHEMA)
        self.retention_seconds = retention_days * 86400.0
        self._pruned_at = 0.0

    def write(self, *records: AuditRecord) -> None:
        """Append records, one statement per BATCH of them (each all or none), deleting those past the retention
        now and then."""
        for start in range(0, len(records), BATCH):
            batch = records[start : start + BATCH]
            rows = ", ".join(["(?, ?, ?, ?)"] * len(batch))
            params = [
                value
                for record in batch
                for value in (record.at, record.user, record.tool, json.dumps(record.to_dict(), separators=(",", ":")))
            ]
            self.database.execute(f"INSERT INTO audit (at, user_id, tool, record) VALUES {rows}", params)  # noqa: S608
        now = time.time()
        if self.retention_seconds and now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            self.prune(now)

    def prune(self, now: float | None = None) -> int:
        """Delete the records older than the retention; returns how many."""
        if not self.retention_seconds:
            return 0
        cutoff = (time.time() if now is None else now) - self.retention_seconds
        return self.database.execute("DELETE FROM audit WHERE at < ?", (cutoff,)).rowcount

    def read(
        self, *, user: str | None = None, tool: str | None = None, since: float | None = None, limit: int | None = None
    ) -> list[AuditRecord]:
        """Records, oldest first, of `user` and `tool` (any when None), started at `since` or later; with
        `limit`, the most recent that many."""
        clauses, params = [], []
        for column, value in (("user_id = ?", user), ("tool = ?", tool), ("at >= ?", since)):
            if value is not None:
                clauses.append(column)
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT record FROM audit{where} ORDER BY at DESC"  # noqa: S608 - fixed column names
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        with self.database.read() as db:
            rows = db.execute(query, params).fetchall()
        return [AuditRecord.from_dict(json.loads(row[0])) for row in reversed(rows)]

    def close(self) -> None:
        self.database.close()


class AuditWriter:
    """Writes a Pocket's records on a thread of its own, after the calls that made them have returned: a record
    costs about 0.3 ms of CPU (an SQLite commit; a round trip to PostgreSQL), which a call no longer waits for;
    handing it over is one put on a queue. Records that pile up meanwhile are written together. `close()` writes
    what is queued, and so does interpreter exit (an atexit hook: the thread is a daemon, which exit would not
    wait for). A runner killed outright loses the records of the calls that ended in the last moment before it,
    as it loses those of the calls it was running."""

    def __init__(self, log: AuditLog):
        self.log = log
        self._queue: queue.SimpleQueue[AuditRecord | None] = queue.SimpleQueue()  # None: stop
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="pocket-audit", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def submit(self, record: AuditRecord) -> None:
        with self._lock:
            if not self._closed:
                self._queue.put(record)
                return
        self._write([record])  # closed meanwhile (a call that outlived its Pocket): written here, now

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        atexit.unregister(self.close)
        self._thread.join()
        self.log.close()

    def _serve(self) -> None:
        while True:
            records = [self._queue.get()]
            with suppress(queue.Empty):
                while True:
                    records.append(self._queue.get_nowait())
            stop = records[-1] is None  # close() puts it last
            self._write([record for record in records if record is not None])
            if stop:
                return

    def _write(self, records: list[AuditRecord]) -> None:
        if not records:
            return
        try:
            self.log.write(*records)
        except (PocketError, OSError) as exc:
            tools = ", ".join(sorted({record.tool for record in records}))
            warnings.warn(f"{len(records)} audit record(s) of {tools} calls were not written: {exc}", stacklevel=1)


def audit_log(settings: Settings) -> AuditLog:
    """The audit log in the credential store's database: the PostgreSQL server of `credentials.database_url`,
    else the SQLite file under `data_dir`."""
    from runner.auth.store import database_path
    from runner.database import open_database

    url = settings.credentials.database_url
    path = None if url is not None else database_path(settings.data_dir)
    recovery = "a new audit log starts (the credentials in it are lost too: log in again)"
    database = open_database(url, path=path, label="audit log", recovery=recovery, durable=False)
    return AuditLog(database, retention_days=settings.audit.retention_days)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float | None = None) -> float:
    """`--since` as epoch seconds: a duration back from now (`90s`, `15m`, `1h`, `7d`, `2w`) or an ISO 8601
    time (`2026-12-06T10:00:00Z`; without a zone, UTC)."""
    from datetime import UTC, datetime

    match = _DURATION.match(text)
    if match:
        return (time.time() if now is None else now) - float(match[1]) * _UNIT_SECONDS[match[2]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise PocketError(
            f"--since {text!r}: give a duration back from now (90s, 15m, 1h, 7d, 2w) or an ISO 8601 time "
            "(2026-12-06T10:00:00Z)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
