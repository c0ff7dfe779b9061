"""The sandbox seen through `Pocket` and the `pocket` command, against the real engine."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from runner.errors import PocketError
from runner.invocation import Outcome
from runner.pocket import Pocket
from runner.settings import SandboxSettings, Settings
from tests.fixtures_docker import running_containers, wait_for_processes
from tests.helpers import HELLO, TOOLS

docker = pytest.mark.docker


@pytest.fixture
def settings(tmp_path):
    return Settings(cache_dir=tmp_path / "cache", data_dir=tmp_path / "data", sandbox=SandboxSettings(pool_size=1))


@docker
def test_pocket_invokes_through_the_sandbox_and_close_removes_its_containers(docker_api, settings):
    with Pocket(tools=[HELLO, TOOLS / "echo"], settings=settings) as box:
        assert box.invoke("hello", {"name": "Ada"}).value == {"greeting": "Hello, Ada!"}
        echoed = box.invoke("echo", {"k": 1}, variables={"GREETING": "yo"})
        assert echoed.value["greeting"] == "yo" and echoed.value["body"] == {"k": 1}
        sandbox_id = box.sandbox.id
    assert docker_api.containers(all=True, filters={"label": f"pocket-runner.sandbox={sandbox_id}"}) == []


@docker
def test_concurrent_first_calls_share_one_sandbox_that_close_removes(docker_api, settings, tmp_path):
    import shutil

    folder = tmp_path / "first_calls"
    shutil.copytree(HELLO, folder)
    document = json.loads((folder / "pocket.json").read_text())
    document["tool"]["name"] = "hello_first_calls"
    (folder / "pocket.json").write_text(json.dumps(document))
    from runner.sandbox import owner_label

    # this process's containers of the tool: another runner's (a test run stopped midway) are not ours to count
    mine = {"label": ["pocket-runner.tool=hello_first_calls", f"pocket-runner.owner={owner_label()}"]}

    async def burst(box: Pocket) -> list:
        return await asyncio.gather(*(box.ainvoke("hello_first_calls", {"name": "Ada"}) for _ in range(12)))

    with Pocket(tools=[folder], settings=settings) as box:  # nothing created yet: all 12 race to create it
        assert all(result.ok for result in asyncio.run(burst(box)))
    assert docker_api.containers(all=True, filters=mine) == []
    with pytest.raises(PocketError, match="this Pocket is closed"):
        box.invoke("hello_first_calls", {"name": "Ada"})


@docker
def test_a_bad_body_never_starts_a_container(docker_api, settings):
    with Pocket(tools=[HELLO], settings=settings) as box:
        result = box.invoke("hello", {"name": ""})
        assert result.outcome is Outcome.BAD_INPUT and "/name" in result.error
        assert box.sandbox.containers() == set()


@docker
def test_ainvoke_runs_calls_in_parallel_without_blocking_the_loop(docker_api, tmp_path):
    """Events, not rates: the tools' runs overlap (the calls ran in parallel), and the loop ticked while a
    tool was running (a blocking ainvoke would hold the loop for each whole call). A loaded machine slows
    both, and breaks neither."""
    folder = tmp_path / "napper"
    folder.mkdir()
    (folder / "pocket.json").write_text(json.dumps({
        "tool": {"name": "napper", "description": "Sleeps, and says when it ran.", "inputSchema": {"type": "object"}},
        "language": "python",
        "entrypoint": {"run": "python napper.py"},
    }))  # fmt: skip
    (folder / "napper.py").write_text(
        "import json, sys, time\nsys.stdin.read()\nstart = time.time()\ntime.sleep(1.5)\n"
        "print(json.dumps([start, time.time()]))\n"
    )
    settings = Settings(cache_dir=tmp_path / "c", data_dir=tmp_path / "d", sandbox=SandboxSettings(pool_size=4))

    async def main(box: Pocket) -> tuple[list, list[float]]:
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                await asyncio.sleep(0.01)
                ticks.append(time.time())  # the host's clock is the containers'

        task = asyncio.create_task(ticker())
        results = await asyncio.gather(*(box.ainvoke("napper", {}) for _ in range(4)))
        task.cancel()
        return results, ticks

    with Pocket(tools=[folder], settings=settings) as box:
        box.prepare()
        results, ticks = asyncio.run(main(box))
    assert all(r.ok for r in results), results
    spans = [r.value for r in results]
    assert max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans) >= 2  # in parallel
    assert any(s < tick < e for s, e in spans for tick in ticks)  # the loop ran while a tool did


@docker
def test_cli_invoke_prints_the_result_and_exits_0(cli, docker_api):
    result = cli("invoke", str(HELLO), "hello", "--body", '{"name": "Ada"}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"greeting": "Hello, Ada!"}


@docker
def test_cli_invoke_of_a_failing_tool_exits_1_with_its_stderr(cli, docker_api):
    result = cli("invoke", str(TOOLS / "fail"), "fail", "--body", "{}")
    assert result.returncode == 1
    assert "pocket: the tool exited with code 3: something broke" in result.stderr
    assert result.stderr.count("something broke") == 1  # quoted in the error, not printed again
    assert "Traceback" not in result.stderr


@docker
def test_cli_shows_build_progress(cli, docker_api, tool_copy):
    folder = tool_copy("hello")
    (folder / "hello.py").write_text((folder / "hello.py").read_text() + f"\n# {time.time_ns()}\n")
    result = cli("invoke", str(folder), "hello", "--body", '{"name": "Ada"}')
    assert result.returncode == 0, result.stderr
    assert "pocket: building image pocket-tool/hello:" in result.stderr
    assert "pocket: build hello: Step 1/" in result.stderr
    tag = result.stderr.split("pocket: building image ", 1)[1].split()[0]
    docker_api.remove_image(tag)  # built for this run only


@docker
def test_cli_timeout_exits_1_within_a_second_of_the_limit(cli, docker_api, monkeypatch):
    """Timed from the start of the call's container (a first call builds the image before, and the CLI's
    start-up is not the tool's run) to the answer."""
    from runner.pocket import Pocket as PocketClass
    from runner.sandbox.engine import DockerEngine

    started: list[float] = []
    answered: list[float] = []
    real_start, real_invoke = DockerEngine.start, PocketClass.invoke

    def start(self, spec):
        container = real_start(self, spec)
        started.append(time.monotonic())
        return container

    def invoke(self, *args, **kwargs):
        result = real_invoke(self, *args, **kwargs)
        answered.append(time.monotonic())
        return result

    monkeypatch.setattr(DockerEngine, "start", start)
    monkeypatch.setattr(PocketClass, "invoke", invoke)
    result = cli("invoke", str(TOOLS / "sleeper"), "sleeper", "--body", "{}", "--timeout", "0.5")
    assert result.returncode == 1 and "timed out after 0.5 s" in result.stderr
    assert started and len(answered) == 1
    assert 0.5 <= answered[0] - started[0] < 1.5, answered[0] - started[0]


@docker
def test_closing_a_pocket_during_slow_calls_ends_them_and_removes_their_containers(docker_api, tmp_path):
    """Ctrl-C during `asyncio.gather` of slow calls: close() returns at once and nothing is left behind."""
    from runner.settings import ToolLimits

    slow = SandboxSettings(pool_size=0, tools={"sleeper": ToolLimits(timeout_seconds=30)})
    settings = Settings(cache_dir=tmp_path / "c", data_dir=tmp_path / "d", sandbox=slow)
    box = Pocket(tools=[TOOLS / "sleeper"], settings=settings)
    sandbox = box.sandbox
    sandbox.image(box.tools["sleeper"])
    mine = {"label": f"pocket-runner.sandbox={sandbox.id}"}

    async def calls() -> list:
        return await asyncio.gather(*(box.ainvoke("sleeper", {}) for _ in range(3)))

    results: list = []
    runner = threading.Thread(target=lambda: results.extend(asyncio.run(calls())))
    runner.start()
    wait_for_processes(docker_api, mine, "python", 3)  # the tools are sleeping now
    started = time.monotonic()
    box.close()
    closing = time.monotonic() - started
    runner.join(10)
    assert closing < 3, closing
    assert docker_api.containers(all=True, filters=mine) == []
    assert [r.error for r in results] == ["the sandbox was closed"] * 3


@docker
def test_a_cancelled_ainvoke_stops_its_tool(docker_api, tmp_path):
    from runner.settings import ToolLimits

    # sleeper's manifest asks for 1 s: the operator grants it 30 s, so only the cancellation can end it
    sandbox = SandboxSettings(pool_size=0, tools={"sleeper": ToolLimits(timeout_seconds=30)})
    settings = Settings(cache_dir=tmp_path / "cache", data_dir=tmp_path / "data", sandbox=sandbox)

    async def agent(box: Pocket) -> float:
        call = asyncio.create_task(box.ainvoke("sleeper", {}))
        mine = {"label": f"pocket-runner.sandbox={box.sandbox.id}"}
        deadline = time.monotonic() + 20
        while not docker_api.containers(filters=mine) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        cancelled = time.monotonic()
        while docker_api.containers(filters=mine) and time.monotonic() < cancelled + 10:
            await asyncio.sleep(0.05)
        assert docker_api.containers(filters=mine) == []  # no longer running the tool
        return time.monotonic() - cancelled

    with Pocket(tools=[TOOLS / "sleeper"], settings=settings) as box:
        box.prepare("sleeper")  # built first: the call starts at once
        assert asyncio.run(agent(box)) < 3


@docker
def test_prepare_builds_and_starts_ahead_so_the_first_call_waits_for_neither(docker_api, tmp_path, monkeypatch):
    import shutil

    from runner import schema
    from runner.function_tools import function_tool

    folder = tmp_path / "prepared"
    shutil.copytree(HELLO, folder)
    (folder / "hello.py").write_text((HELLO / "hello.py").read_text().replace("Hello", f"Hi{time.time_ns()}"))

    @function_tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    messages: list[str] = []
    settings = Settings(cache_dir=tmp_path / "c", data_dir=tmp_path / "d", sandbox=SandboxSettings(pool_size=1))
    with Pocket(tools=[folder, add], settings=settings, progress=messages.append) as box:
        with pytest.raises(PocketError, match="unknown tool 'nope' \\(known: add, hello\\)"):
            box.prepare("nope")
        box.prepare()  # every tool: the function's body check only
        assert any(m.startswith("building image pocket-tool/hello:") for m in messages)
        mine = {"label": f"pocket-runner.sandbox={box.sandbox.id}"}
        assert running_containers(docker_api, mine, timeout=10)  # a container already waits for the first call
        messages.clear()
        compiled: list[object] = []  # a tool's check is compiled at its second body, had prepare not done it
        monkeypatch.setattr(schema, "_compiled", lambda s, made=schema._compiled: compiled.append(s) or made(s))
        assert box.invoke("hello", {"name": "Ada"}).ok and box.invoke("hello", {"name": "Bo"}).ok
        assert [box.invoke("add", {"a": 1, "b": i}).value for i in (1, 2)] == [2, 3]
        assert messages == []  # no build
        assert compiled == []  # no compile
        image = box.sandbox.image(box.tools["hello"])
    docker_api.remove_image(image)  # built for this test only
