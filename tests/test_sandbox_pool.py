"""The started-container pool under load: a call finding it empty waits for a container already being started
(no start of its own), a call's container is replaced after the call, not while it runs, and a burst far over
the tool's cap all succeeds with the cap holding."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from runner.manifest import load_manifest
from runner.sandbox import Sandbox
from runner.settings import SandboxSettings
from tests.helpers import HELLO

docker = pytest.mark.docker


def _pool(box: Sandbox, tool: str, idle: int):
    """The tool's pool, once it holds `idle` started containers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pools = box._pools.of_tool(tool)
        if pools and len(pools[0].idle) >= idle:
            return pools[0]
        time.sleep(0.05)
    raise AssertionError(f"the pool of {tool} did not hold {idle} containers in 60 s")


@docker
def test_a_call_finding_the_pool_empty_waits_for_the_start_in_flight_instead_of_its_own(docker_api):
    manifest = load_manifest(HELLO)
    with Sandbox(SandboxSettings(pool_size=1)) as box:
        engine = box._engine
        real_start = engine.start
        gate = threading.Event()
        gate.set()
        starts: list[str] = []

        def start(spec):  # the real start, held back on the background threads while the gate is closed
            starts.append(threading.current_thread().name)
            if threading.current_thread().name.startswith("pocket-sandbox"):
                gate.wait(60)
            return real_start(spec)

        engine.start = start
        box.prepare(manifest)
        pool = _pool(box, "hello", 1)
        gate.clear()
        starts.clear()
        first = box.run(manifest, {"name": "one"}, {})  # takes the idle one; its refill waits at the gate
        results: list = []
        second = threading.Thread(target=lambda: results.append(box.run(manifest, {"name": "two"}, {})))
        second.start()
        deadline = time.monotonic() + 30
        while pool.waiting == 0 and time.monotonic() < deadline and second.is_alive():
            time.sleep(0.01)
        assert pool.waiting == 1, "the second call did not wait for the container being started"
        gate.set()
        second.join(60)
    assert first.value == {"greeting": "Hello, one!"} and results[0].value == {"greeting": "Hello, two!"}
    assert starts and all(name.startswith("pocket-sandbox") for name in starts), starts  # none by a call


TIMED = """
import json, sys, time
body = json.load(sys.stdin)
start = time.time()
time.sleep(body["seconds"])
print(json.dumps({"start": start, "end": time.time()}))
"""


def _timed_tool(tmp_path: Path):
    folder = tmp_path / "timed"
    folder.mkdir()
    (folder / "timed.py").write_text(TIMED)
    (folder / "pocket.json").write_text(json.dumps({
        "tool": {"name": "timed", "description": "sleeps", "inputSchema": {"type": "object"}},
        "language": "python", "entrypoint": {"run": "python timed.py"},
    }))  # fmt: skip
    return load_manifest(folder)


@docker
def test_the_container_a_call_took_is_replaced_after_the_call_not_while_it_runs(docker_api, tmp_path: Path):
    """A start is ~0.2 s of the engine's CPU: during a call it would compete with the call's own container."""
    manifest = _timed_tool(tmp_path)
    with Sandbox(SandboxSettings(pool_size=1)) as box:
        engine = box._engine
        real_start = engine.start
        starts: list[float] = []

        def start(spec):
            starts.append(time.time())  # the container's clock is the host's: comparable with the tool's times
            return real_start(spec)

        engine.start = start
        box.prepare(manifest)
        _pool(box, "timed", 1)
        starts.clear()
        result = box.run(manifest, {"seconds": 1.0}, {})
        _pool(box, "timed", 1)  # refilled
    assert result.ok, result.error
    assert len(starts) == 1 and starts[0] >= result.value["end"], (starts, result.value)


@docker
def test_a_burst_of_64_calls_all_succeed_and_never_more_than_the_cap_run_at_once(docker_api, tmp_path: Path):
    manifest = _timed_tool(tmp_path)
    cap = 4
    with Sandbox(SandboxSettings(pool_size=2, pool_max=8, max_concurrent=cap)) as box:
        box.prepare(manifest)
        results: list = []
        lock = threading.Lock()

        def call() -> None:
            result = box.run(manifest, {"seconds": 0.3}, {}, timeout=300)
            with lock:
                results.append(result)

        calls = [threading.Thread(target=call) for _ in range(64)]
        for thread in calls:
            thread.start()
        for thread in calls:
            thread.join()
        (pool,) = box._pools.of_tool("timed")
        assert pool.in_use == 0 and pool.waiting == 0
        assert len(pool.idle) + pool.starting <= cap
    assert len(results) == 64 and all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    spans = sorted((r.value["start"], r.value["end"]) for r in results)
    at_once = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert 1 <= at_once <= cap
