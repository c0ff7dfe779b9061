"""What a hostile or crashed run must not leave behind: tokens in finished containers, containers after an
engine restart, files the tool's user could not read on the host."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

import runner.sandbox.background as background
from runner.invocation import Outcome
from runner.manifest import load_manifest
from runner.sandbox import Sandbox
from runner.settings import SandboxSettings
from tests.fixtures_docker import running_containers

docker = pytest.mark.docker
TOKEN = "xoxb-left-behind-7d1f"


def _write_tool(folder: Path, name: str, run: str, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    manifest = {
        "tool": {"name": name, "description": "test", "inputSchema": {"type": "object"}},
        "language": "python",
        "entrypoint": {"run": run},
    }
    (folder / "pocket.json").write_text(json.dumps(manifest))
    for rel, text in files.items():
        (folder / rel).write_text(text)
    return folder


def _exec(docker_api, cid: str, script: str) -> str:
    run = docker_api.exec_create(cid, ["/bin/sh", "-c", script])
    return docker_api.exec_start(run["Id"]).decode("utf-8", "replace")


@docker
def test_a_finished_call_leaves_no_process_holding_its_token_even_when_the_runner_died(docker_api, tmp_path, runtime):
    folder = _write_tool(
        tmp_path / "daemonizer",
        "daemonizer",
        "sh start.sh",
        {"start.sh": "sleep 1000 >/dev/null 2>&1 &\necho '{\"started\": true}'\n"},
    )
    # A runner that makes one call and stops before removing the call's container (its removal is held back,
    # as when the runner crashed; it stays alive so other runners' stale cleanup leaves the container alone).
    runner = textwrap.dedent(
        f"""
        import os, sys
        from runner.manifest import load_manifest
        import runner.sandbox.background as background
        from runner.sandbox import Sandbox
        from runner.settings import SandboxSettings
        background.QUIET_REMOVE = background.SETTLE_REMOVE = 120
        box = Sandbox(SandboxSettings(pool_size=0, runtime={runtime!r}))
        result = box.run(load_manifest({str(folder)!r}), {{}}, {{"SLACK_BOT_TOKEN": {TOKEN!r}}})
        print(box.id, result.ok, result.value, flush=True)
        sys.stdin.read()
        os._exit(0)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", runner], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sandbox_id = ""
    try:
        line = child.stdout.readline()
        sandbox_id, ok, *_ = line.split() or ["", ""]
        assert ok == "True", line
        (container,) = docker_api.containers(filters={"label": f"pocket-runner.sandbox={sandbox_id}"})
        environments = _exec(docker_api, container["Id"], "for f in /proc/[0-9]*/environ; do cat $f; echo; done")
        processes = _exec(
            docker_api, container["Id"], "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done"
        )
        assert TOKEN not in environments
        assert "sleep 1000" not in processes  # the daemon the tool started is gone
        assert "sleep 600" in processes  # what waits for the removal ends by itself
    finally:
        child.kill()
        child.wait()
        for leftover in docker_api.containers(all=True, filters={"label": f"pocket-runner.sandbox={sandbox_id}"}):
            docker_api.remove_container(leftover["Id"], force=True)


class EngineLink:
    """A unix socket in front of the real engine that the test can cut and restore, as when dockerd restarts."""

    def __init__(self, path: Path):
        self.path = path
        self._target = (os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock").removeprefix("unix://")
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    def restore(self) -> None:
        self.path.unlink(missing_ok=True)
        listener = self._listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(self.path))
        listener.listen(64)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        if self._listener is not None:
            self._listener.close()
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.path.unlink(missing_ok=True)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self._target)
            self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _wait_for_failed_removal(box: Sandbox, cid: str, timeout: float = 20) -> None:
    """Until the background removal of `cid` was tried and failed (the engine was down)."""
    deadline = time.monotonic() + timeout
    while cid not in box._engine._unremoved and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cid in box._engine._unremoved, f"no failed removal of {cid} in {timeout} s"


@docker
def test_containers_the_engine_could_not_remove_while_down_are_removed_once_it_is_back(
    docker_api, tool, tmp_path, monkeypatch
):
    link = EngineLink(tmp_path / "engine.sock")
    link.restore()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{link.path}")
    monkeypatch.setattr(background, "SETTLE_REMOVE", 1.0)  # the call's container is removed 1 s after it
    box = Sandbox(SandboxSettings(pool_size=0))
    try:
        assert box.run(tool("hello"), {"name": "Ada"}, {}).ok
        (left,) = box.containers()
        link.cut()  # the engine goes away before the removal
        down = box.run(tool("hello"), {"name": "Ada"}, {})
        assert down.outcome is Outcome.TOOL_FAILED
        assert down.error.startswith(f"the Docker engine at unix://{link.path} (DOCKER_HOST) does not answer (")
        _wait_for_failed_removal(box, left)
        assert docker_api.containers(all=True, filters={"id": left})
        link.restore()
        assert left in box.cleanup_stale()  # a live runner's cleanup retries its own failed removals
        assert not docker_api.containers(all=True, filters={"id": left})
    finally:
        link.restore()
        box.close()
        link.cut()
    assert not docker_api.containers(all=True, filters={"label": f"pocket-runner.sandbox={box.id}"})


@docker
def test_close_removes_what_the_engine_could_not_remove_while_it_was_down(docker_api, tool, tmp_path, monkeypatch):
    link = EngineLink(tmp_path / "engine.sock")
    link.restore()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{link.path}")
    monkeypatch.setattr(background, "SETTLE_REMOVE", 1.0)
    box = Sandbox(SandboxSettings(pool_size=0))
    try:
        assert box.run(tool("hello"), {"name": "Ada"}, {}).ok
        (left,) = box.containers()
        link.cut()
        _wait_for_failed_removal(box, left)
        link.restore()
    finally:
        box.close()
        link.cut()
    assert not docker_api.containers(all=True, filters={"label": f"pocket-runner.sandbox={box.id}"})


@docker
def test_a_file_hard_linked_from_outside_the_folder_is_refused_and_links_inside_it_are_fine(sandbox, tmp_path):
    key = tmp_path / "credentials.key"
    key.write_text("the runner's secret key")
    key.chmod(0o600)
    folder = _write_tool(tmp_path / "linker", "linker", "cat data.txt", {})
    os.link(key, folder / "data.txt")
    result = sandbox.run(load_manifest(folder), {}, {})
    assert result.outcome is Outcome.TOOL_FAILED
    assert result.error == (
        f"the folder of tool 'linker' ({folder}) holds hard links to files outside it: data.txt; "
        "copy those files into the folder instead of linking them"
    )
    assert "secret key" not in repr(result)

    (folder / "data.txt").unlink()
    (folder / "data.txt").write_text('{"copied": true}')
    os.link(folder / "data.txt", folder / "same.txt")
    assert sandbox.run(load_manifest(folder), {}, {}).value == {"copied": True}


def _timed_tool(tmp_path: Path) -> Path:
    """A tool that sleeps `seconds` and says when it ran (the host's clock is the container's)."""
    code = (
        "import json, sys, time\n"
        "body = json.load(sys.stdin)\n"
        "start = time.time()\n"
        "time.sleep(body['seconds'])\n"
        "print(json.dumps({'start': start, 'end': time.time()}))\n"
    )
    return _write_tool(tmp_path / "timed", "timed", "python timed.py", {"timed.py": code})


@docker
def test_max_concurrent_caps_the_containers_of_a_tool_and_calls_beyond_it_wait(docker_api, tmp_path):
    manifest = load_manifest(_timed_tool(tmp_path))
    with Sandbox(SandboxSettings(pool_size=1, pool_max=8, max_concurrent=2)) as box:
        results: list = []
        calls = [
            threading.Thread(target=lambda: results.append(box.run(manifest, {"seconds": 2}, {}))) for _ in range(4)
        ]
        for call in calls:
            call.start()
        for call in calls:
            call.join()
        assert [r.ok for r in results] == [True] * 4, [r.error for r in results]
        spans = sorted((r.value["start"], r.value["end"]) for r in results)
        overlapping = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
        assert overlapping == 2  # never 3 at once, and the cap is used
        (pool,) = box._pools.of_tool("timed")
        assert pool.size <= 2 and len(pool.idle) + pool.starting <= 2


@docker
def test_a_call_waiting_for_a_container_longer_than_its_timeout_fails_saying_why(docker_api, tmp_path):
    manifest = load_manifest(_timed_tool(tmp_path))
    with Sandbox(SandboxSettings(pool_size=0, max_concurrent=1)) as box:
        box.image(manifest)
        first = threading.Thread(target=box.run, args=(manifest, {"seconds": 3}, {}))
        first.start()
        running_containers(docker_api, {"label": f"pocket-runner.sandbox={box.id}"})  # it holds the one slot
        waiting = box.run(manifest, {"seconds": 0}, {}, timeout=1)
        first.join()
    assert waiting.outcome is Outcome.TOOL_FAILED
    assert waiting.error == (
        "timed out after 1 s waiting for a container: tool 'timed' runs at most 1 at once "
        "(sandbox.max_concurrent, or [sandbox.tools.timed])"
    )


@pytest.fixture(scope="module")
def shell_less_image(docker_api) -> str:
    """An image with no /bin/sh: a container of it cannot start the launcher."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("README")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\\n"))
    docker_api.import_image_from_data(data.getvalue(), repository="pocket-test/no-shell", tag="1")
    return "pocket-test/no-shell:1"


def _runsc_processes() -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            command = (proc / "cmdline").read_bytes()
            if proc.name.isdigit() and command.startswith(b"runsc"):
                found.append(command.decode("utf-8", "replace"))
    return found


@docker
def test_a_container_that_cannot_start_fails_the_call_and_leaves_no_process(
    docker_api, runtime, shell_less_image, tmp_path, monkeypatch
):
    """No runsc process names the container that could not start (others' runsc processes, such as a pool
    refilling for another test, may come and go meanwhile)."""
    from runner.sandbox.engine import DockerEngine

    created: list[tuple[DockerEngine, str]] = []  # by every engine: another test's pool may still be refilling
    real_track = DockerEngine.track
    monkeypatch.setattr(DockerEngine, "track", lambda self, cid: (created.append((self, cid)), real_track(self, cid)))
    folder = _write_tool(tmp_path / "shellless", "shellless", "/bin/sh -c true", {})
    manifest = json.loads((folder / "pocket.json").read_text())
    del manifest["language"]
    (folder / "pocket.json").write_text(json.dumps({**manifest, "baseImage": shell_less_image}))
    with Sandbox(SandboxSettings(pool_size=0, runtime=runtime)) as box:
        result = box.run(load_manifest(folder), {}, {})
        assert result.outcome is Outcome.TOOL_FAILED
        assert result.error.startswith("the sandbox could not start the tool's container: "), result.error
        assert box.containers() == set()
    (cid,) = [cid for engine, cid in created if engine is box._engine]
    assert [p for p in _runsc_processes() if cid in p] == []
