"""The audit log: one record per invocation from every surface, nothing secret in it, retention, several
writers, a writer killed mid-record, and `pocket audit` reading it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from runner.audit import AuditLog, AuditRecord, Surface, audit_log, parse_since
from runner.auth.store import STORE_FILE, database_path
from runner.database import SQLiteDatabase
from runner.errors import PocketError
from runner.function_tools import function_tool
from runner.integrations.langchain import langchain_tools
from runner.invocation import Outcome
from runner.pocket import Pocket
from runner.server import build_server
from tests.fixtures_postgres import KEY
from tests.helpers import HELLO, REPO, settings

SECRET = "xoxb-audit-secret-4242"
BODY_MARK = "channel-in-the-body-7777"


@function_tool(auth_provider="slack", scopes=["chat:write"])
def post(channel: str, SLACK_BOT_TOKEN: str) -> str:
    """Post to Slack."""
    return f"posted to {channel} with {SLACK_BOT_TOKEN}"


@function_tool
def add(a: int, b: int = 1) -> int:
    """Add two integers."""
    return a + b


def _records(tmp_path: Path, **filters: Any) -> list[AuditRecord]:
    log = audit_log(settings(tmp_path))
    try:
        return log.read(**filters)
    finally:
        log.close()


def _file(path: Path) -> SQLiteDatabase:
    return SQLiteDatabase(path, label="audit log", durable=False)


def _database_bytes(tmp_path: Path) -> bytes:
    path = database_path(tmp_path / "data")
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


def test_every_surface_writes_one_record_and_none_holds_a_body_a_result_or_a_secret(tmp_path):
    with Pocket([post, add], settings=settings(tmp_path)) as pocket:
        pocket.authenticator.login_with("slack", {"token": SECRET}, user_id="alice")
        posted = pocket.invoke("post", {"channel": BODY_MARK}, user_id="alice")  # Python
        assert posted.ok and SECRET not in posted.text()
        assert pocket.invoke({"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}})
        assert pocket.invoke({"type": "tool_use", "id": "t1", "name": "add", "input": {"a": 2}})
        bad = pocket.invoke({"id": "c2", "type": "function", "function": {"name": "add", "arguments": "{not json"}})
        assert bad.invocation.outcome is Outcome.BAD_INPUT
        (tool,) = [t for t in langchain_tools(pocket) if t.name == "add"]
        assert tool.invoke({"a": 3}) == "4"

        async def over_mcp() -> Any:
            async with Client(build_server(pocket, user_id="alice")) as client:
                return await client.call_tool("post", {"channel": BODY_MARK})

        assert not anyio.run(over_mcp).is_error
        assert anyio.run(lambda: pocket.ainvoke("nope", {})).outcome is Outcome.BAD_INPUT  # unknown tool: recorded

    records = _records(tmp_path)
    assert [(r.surface, r.tool, r.outcome, r.user) for r in records] == [
        (Surface.PYTHON, "post", Outcome.OK, "alice"),
        (Surface.OPENAI, "add", Outcome.OK, "default"),
        (Surface.ANTHROPIC, "add", Outcome.OK, "default"),
        (Surface.OPENAI, "add", Outcome.BAD_INPUT, "default"),
        (Surface.LANGCHAIN, "add", Outcome.OK, "default"),
        (Surface.MCP, "post", Outcome.OK, "alice"),
        (Surface.PYTHON, "nope", Outcome.BAD_INPUT, "default"),
    ]
    first = records[0]
    assert (first.provider, first.scopes, first.backend) == ("slack", ("chat:write",), "function")
    assert first.source.startswith("function tests.test_audit.post (")
    assert first.network is not None and first.network.access.value == "in_process"
    assert first.bytes_in == len(json.dumps({"channel": BODY_MARK}))
    assert first.bytes_out == len(posted.text())
    assert all(r.at <= time.time() and r.duration_seconds >= 0 for r in records)
    stored = _database_bytes(tmp_path)
    for never in (SECRET, BODY_MARK, "posted to"):
        assert never.encode() not in stored, never


@pytest.mark.docker
def test_a_sandboxed_call_records_its_image_commit_backend_exit_code_and_network(tmp_path, docker_api, git_remote):
    # A token in the source URL (the dumb HTTP server ignores it) is not kept.
    source = git_remote.http_url.replace("http://", f"http://x-access-token:{SECRET}@") + "@v1#tools/alpha"
    with Pocket([source], settings=settings(tmp_path)) as pocket:
        result = pocket.invoke("alpha", {})
    assert result.ok, result
    (record,) = _records(tmp_path)
    assert record.source == git_remote.http_url.replace("http://", "http://[redacted]@") + "@v1#tools/alpha"
    assert record.commit == git_remote.commits["v1"]
    assert SECRET.encode() not in _database_bytes(tmp_path)
    assert record.image == result.image == docker_api.inspect_image(record.image)["Id"]
    assert (record.backend, record.exit_code, record.outcome) == ("docker/runc", 0, Outcome.OK)
    assert record.network is not None and record.network.access.value == "none"


def test_reading_filters_by_user_tool_and_time_and_pocket_audit_prints_them(tmp_path, cli):
    log = audit_log(settings(tmp_path))
    now = time.time()
    for at, user, tool in ((now - 7200, "alice", "a"), (now - 60, "alice", "b"), (now - 30, "bob", "a")):
        log.write(AuditRecord(at, user, tool, Surface.CLI, "function", Outcome.OK, 0.01, 2, 3))
    assert [r.tool for r in log.read(user="alice")] == ["a", "b"]
    assert [r.user for r in log.read(tool="a", since=parse_since("1h"))] == ["bob"]
    assert [r.user for r in log.read(limit=2)] == ["alice", "bob"]  # the latest two, oldest first
    log.close()
    (tmp_path / "settings.toml").write_text(f'data_dir = "{tmp_path / "data"}"\n')
    ran = cli("audit", "--user", "alice", "--since", "1h", "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran
    (shown,) = json.loads(ran.stdout)
    assert (shown["user"], shown["tool"], shown["surface"], shown["outcome"]) == ("alice", "b", "cli", "ok")
    text = cli("audit", "--tool", "a", cwd=tmp_path)
    assert text.returncode == 0 and len(text.stdout.splitlines()) == 2 and "bob  a  ok" in text.stdout
    wrong = cli("audit", "--since", "yesterday", cwd=tmp_path)
    assert wrong.returncode == 2 and "--since 'yesterday'" in wrong.stderr and "1h" in wrong.stderr


def test_records_past_the_retention_are_deleted(tmp_path):
    path = database_path(tmp_path / "data")
    old, new = time.time() - 3 * 86400, time.time()
    AuditLog(_file(path)).write(AuditRecord(old, "u", "old", Surface.PYTHON, "function", Outcome.OK, 0, 0, 0))
    log = AuditLog(_file(path), retention_days=2)
    log.write(AuditRecord(new, "u", "new", Surface.PYTHON, "function", Outcome.OK, 0, 0, 0))  # prunes
    assert [r.tool for r in log.read()] == ["new"]


def test_with_credentials_database_url_every_replica_audits_into_postgresql(tmp_path, postgres_url, cli):
    shared = {"callback_port": 0, "database_url": postgres_url, "encryption_key": KEY.get_secret_value()}
    for replica in ("alice", "bob"):  # two runners, each with a data folder of its own
        with Pocket([add], settings=settings(tmp_path / replica, credentials=shared)) as pocket:
            assert pocket.invoke("add", {"a": 1}, user_id=replica).ok
    assert not list(tmp_path.rglob(STORE_FILE))  # nothing kept on this machine
    (tmp_path / "settings.toml").write_text(f'[credentials]\ndatabase_url = "{postgres_url}"\n')
    ran = cli("audit", "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran
    assert [(r["user"], r["tool"], r["outcome"]) for r in json.loads(ran.stdout)] == [
        ("alice", "add", "ok"),
        ("bob", "add", "ok"),
    ]


def test_the_credentials_and_the_audit_log_share_one_private_database(tmp_path):
    with Pocket([add], settings=settings(tmp_path)) as pocket:
        pocket.authenticator.login_with("slack", {"token": SECRET}, user_id="alice")
        pocket.invoke("add", {"a": 1})
    path = database_path(tmp_path / "data")
    tables = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"credentials", "audit"} <= tables
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)


def test_audit_can_be_turned_off(tmp_path):
    with Pocket([add], settings=settings(tmp_path, audit={"enabled": False})) as pocket:
        assert pocket.invoke("add", {"a": 1}).ok
    assert not database_path(tmp_path / "data").exists() or _records(tmp_path) == []


WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from runner.audit import AuditLog, AuditRecord, Surface
    from runner.database import SQLiteDatabase
    from runner.invocation import Outcome
    from pathlib import Path

    log = AuditLog(SQLiteDatabase(Path(sys.argv[1]), label="audit log", durable=False))
    name = sys.argv[2]
    for n in range(100000):
        log.write(AuditRecord(time.time(), name, f"tool-{{n}}", Surface.PYTHON, "function", Outcome.OK, 0.0, n, n))
        print(n, flush=True)  # written: this record must survive whatever happens next
    """
)


def test_a_writer_killed_mid_record_loses_nothing_already_written_and_others_go_on(tmp_path):
    path = database_path(tmp_path / "data")
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(repo=str(REPO)))
    writers = {
        name: subprocess.Popen([sys.executable, str(script), str(path), name], stdout=subprocess.PIPE, text=True)
        for name in ("killed", "steady")
    }
    acknowledged: dict[str, int] = {}
    try:
        killed = writers["killed"]
        for line in killed.stdout:  # wait for real progress, then kill it while it writes
            acknowledged["killed"] = int(line)
            if acknowledged["killed"] >= 300:
                break
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(10)
        for line in killed.stdout:  # acknowledged in the pipe before the kill
            acknowledged["killed"] = int(line)
        steady = writers["steady"]
        for line in steady.stdout:  # the other writer goes on after the kill
            acknowledged["steady"] = int(line)
            if acknowledged["steady"] >= acknowledged["killed"] + 50:
                break
    finally:
        for process in writers.values():
            if process.poll() is None:
                process.kill()
            process.wait(10)
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    log = AuditLog(_file(path))
    for name, last in acknowledged.items():
        written = {record.bytes_in for record in log.read(user=name, limit=1_000_000)}
        assert set(range(last + 1)) <= written, f"{name}: lost {sorted(set(range(last + 1)) - written)[:10]}"


UNCLOSED = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path
    from runner import Pocket, function_tool
    from runner.settings import Settings

    @function_tool
    def add(a: int, b: int = 1) -> int:
        \"\"\"Add.\"\"\"
        return a + b

    folder = Path(sys.argv[1])
    pocket = Pocket([add], settings=Settings(cache_dir=folder / "cache", data_dir=folder / "data"))
    with ThreadPoolExecutor(8) as threads:  # calls from several threads at once
        assert all(r.ok for r in threads.map(lambda n: pocket.invoke("add", {{"a": n}}), range(200)))
    print("returned", flush=True)  # and exits without closing the Pocket
    """
)


def test_records_written_behind_the_calls_are_all_there_when_the_process_exits_without_closing(tmp_path):
    script = tmp_path / "unclosed.py"
    script.write_text(UNCLOSED.format(repo=str(REPO)))
    ran = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and ran.stdout == "returned\n", ran.stderr
    records = _records(tmp_path, tool="add", limit=1000)
    assert sorted(record.bytes_in for record in records) == sorted(len(f'{{"a": {n}}}') for n in range(200))
    assert {record.outcome for record in records} == {Outcome.OK}


@pytest.mark.docker
def test_pocket_invoke_records_its_calls_as_the_cli_s(tmp_path, cli, docker_api):
    (tmp_path / "settings.toml").write_text(f'data_dir = "{tmp_path / "data"}"\ncache_dir = "{tmp_path / "cache"}"\n')
    ran = cli("invoke", str(HELLO), "hello", "--body", '{"name": "Ada"}', cwd=tmp_path)
    assert ran.returncode == 0, ran
    (record,) = _records(tmp_path)
    assert (record.surface, record.tool, record.outcome) == (Surface.CLI, "hello", Outcome.OK)
    assert record.source == str(HELLO)


def test_a_cancelled_call_is_recorded_too(tmp_path):
    running: list[asyncio.Event] = []

    @function_tool
    async def wait(seconds: float) -> str:
        """Wait."""
        running[0].set()
        await asyncio.sleep(seconds)
        return "waited"

    async def scenario(pocket: Pocket) -> None:
        running.append(asyncio.Event())
        call = asyncio.ensure_future(pocket.ainvoke("wait", {"seconds": 60}))
        await running[0].wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    with Pocket([wait], settings=settings(tmp_path)) as pocket:
        asyncio.run(scenario(pocket))
    (record,) = _records(tmp_path)
    assert (record.tool, record.outcome) == ("wait", Outcome.TOOL_FAILED)


def test_a_call_that_outlives_close_is_recorded_and_a_call_after_it_is_refused_unrecorded(tmp_path):
    """close() while a function tool runs: the call ends, its record is written (by the call's own thread: the
    Pocket's writer is closed) and no writer thread is left behind; a call on the closed Pocket raises before
    it is a call, as for a sandboxed tool, so it leaves no record."""
    started, release = threading.Event(), threading.Event()

    @function_tool
    def slow() -> str:
        """Wait to be let go."""
        started.set()
        release.wait(10)
        return "done"

    others = set(threading.enumerate())  # another test's Pocket, not closed yet, may have a writer of its own
    pocket = Pocket([slow, add], settings=settings(tmp_path))
    assert pocket.invoke("add", {"a": 1}).ok  # the writer thread is running
    results: list[Any] = []
    call = threading.Thread(target=lambda: results.append(pocket.invoke("slow", {})))
    call.start()
    assert started.wait(10)
    pocket.close()
    release.set()
    call.join(10)
    assert results and results[0].ok and results[0].value == "done"
    with pytest.raises(PocketError, match="this Pocket is closed"):
        pocket.invoke("add", {"a": 2})
    with pytest.raises(PocketError, match="this Pocket is closed"):
        asyncio.run(pocket.ainvoke("add", {"a": 3}))
    assert [(r.tool, r.outcome) for r in _records(tmp_path)] == [("add", Outcome.OK), ("slow", Outcome.OK)]
    assert not [t for t in set(threading.enumerate()) - others if t.name.startswith("pocket-audit")]
