"""The local pocket process behind `pocket invoke`: started by a first command, reused by the next, never serving
stale settings or tool code, refusing other users, exiting when idle, and cancelling a call with its command.

Most tests run `pocket` as real processes (the process is detached from the command, and signals are what a
person sends); `runtime` gives each test a folder of its own for the sockets, and stops what started there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.daemon import protocol
from tests.fixtures_docker import wait_for_processes
from tests.helpers import HELLO, NO_DAEMON, POCKET, VALID, environment, write

BODY = json.dumps({"name": "Ada"})
GREETING = '{"greeting": "Hello, Ada!"}\n'


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def wait_until(condition: Any, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout} s: {what}")
        time.sleep(0.05)


class Runtime:
    """A runtime folder (XDG_RUNTIME_DIR) of one test's own, a working folder with its settings, and `pocket`
    run as a real process with the local pocket process on."""

    def __init__(self, root: Path, work: Path):
        self.root, self.work = root, work
        self.sockets = root / "pocket-runner"
        self.settings = work / "settings.toml"
        self.write_settings()

    def write_settings(self, extra: str = "") -> None:
        self.settings.write_text(
            f'cache_dir = "{self.work / "cache"}"\ndata_dir = "{self.work / "data"}"\n'
            f"[credentials]\ncallback_port = 0\n{extra}"
        )

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in environment().items() if k not in NO_DAEMON}
        return base | {"XDG_RUNTIME_DIR": str(self.root)} | extra

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [POCKET, *args], cwd=self.work, env=env or self.env(), text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POCKET, *args], cwd=self.work, env=env or self.env(), text=True, capture_output=True,
            stdin=subprocess.DEVNULL, timeout=300, check=False,
        )  # fmt: skip

    def pids(self) -> set[int]:
        """The local processes serving here now."""
        found = set()
        for lock in self.sockets.glob("*.lock"):
            text = lock.read_text().strip()
            if text.isdigit() and alive(int(text)) and lock.with_suffix(".sock").exists():
                found.add(int(text))
        return found

    def serving(self) -> int:
        """The pid of the one local process serving here (waits for it to listen)."""
        wait_until(lambda: len(self.pids()) == 1, "one local pocket process listening")
        return next(iter(self.pids()))

    def served(self, pid: int) -> int:
        """How many calls process `pid` has answered."""
        lines = "".join(log.read_text() for log in self.sockets.glob("*.log")).splitlines()
        return sum(f"pid {pid}: call of " in line for line in lines)

    def log(self) -> str:
        return "".join(log.read_text() for log in self.sockets.glob("*.log"))

    def stop(self) -> None:
        """SIGTERM to the processes this test started (they remove their containers), then wait for them."""
        for lock in self.sockets.glob("*.lock"):
            text = lock.read_text().strip()
            if text.isdigit() and alive(int(text)):
                os.kill(int(text), signal.SIGTERM)
                wait_until(lambda pid=int(text): not alive(pid), f"process {text} to exit", timeout=120)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    root = Path(tempfile.mkdtemp(prefix="pd-", dir="/tmp"))  # short: a socket's path holds at most 107 bytes
    work = tmp_path / "work"
    work.mkdir()
    place = Runtime(root, work)
    try:
        yield place
    finally:
        place.stop()
        shutil.rmtree(root, ignore_errors=True)


def tool(folder: Path, name: str, run: str, **files: str) -> Path:
    """A tool folder whose `run` command is a shell command; `files` are written beside its pocket.json."""
    schema = {"type": "object"}
    write(folder, {**VALID, "tool": {"name": name, "description": "A test tool.", "inputSchema": schema},
                   "entrypoint": {"run": run}})  # fmt: skip
    for file, text in files.items():
        (folder / file).write_text(text)
    return folder


def started_daemon(runtime: Runtime, source: str, name: str, body: str = "{}") -> int:
    """Start the local process with a first command (which runs the call itself), and have it load `source`."""
    first = runtime.run("invoke", source, name, "--body", body)
    assert first.returncode == 0, first.stderr
    pid = runtime.serving()
    second = runtime.run("invoke", source, name, "--body", body)
    assert second.returncode == 0, second.stderr
    assert runtime.served(pid) == 1
    return pid


# -- starting, reusing, output ------------------------------------------------------------------------------


@pytest.mark.docker
def test_the_first_command_starts_the_process_and_the_next_ones_use_it(runtime, docker_api):
    first = runtime.run("invoke", str(HELLO), "hello", "--body", BODY)
    assert (first.returncode, first.stdout) == (0, GREETING)  # its stderr may show a build, if the image was gone
    pid = runtime.serving()
    assert runtime.served(pid) == 0  # the first command ran its call itself, and returned without waiting
    for count in (1, 2):
        again = runtime.run("invoke", str(HELLO), "hello", "--body", BODY)
        assert (again.returncode, again.stdout, again.stderr) == (0, GREETING, "")
        assert runtime.served(pid) == count
    assert runtime.pids() == {pid}
    mode = (runtime.sockets / next(runtime.sockets.glob("*.sock")).name).stat().st_mode
    assert oct(runtime.sockets.stat().st_mode & 0o777) == "0o700" and mode & 0o077 == 0


@pytest.mark.docker
def test_concurrent_commands_start_one_process_and_share_it(runtime, docker_api):
    def together() -> list[tuple[int, str]]:
        commands = [runtime.start("invoke", str(HELLO), "hello", "--body", BODY) for _ in range(4)]
        outputs = [c.communicate(timeout=300)[0] for c in commands]
        return [(c.returncode, out) for c, out in zip(commands, outputs, strict=True)]

    assert together() == [(0, GREETING)] * 4  # each started a process: one serves, the others saw its lock
    pid = runtime.serving()
    before = runtime.served(pid)  # 0, unless a command of the first four started late enough to find it
    assert together() == [(0, GREETING)] * 4
    assert runtime.served(pid) == before + 4 and runtime.pids() == {pid}


CASES = {
    "ok": ["hello", "--body", BODY],
    "bad body": ["hello", "--body", '{"name": ""}'],
    "unknown tool": ["nope", "--body", "{}"],
    "tool fails": ["fails", "--body", "{}"],
    "needs authorization": ["needs_token", "--body", "{}"],
    "timeout": ["sleeper", "--body", "{}", "--timeout", "1"],
    "variables": ["env", "--body", "{}", "--var", "COLOUR=blue"],
    "bad variable": ["env", "--body", "{}", "--var", "BAD NAME=1"],
}


@pytest.mark.docker
def test_output_and_exit_codes_are_those_of_the_command_running_the_call_itself(runtime, docker_api):
    tools = runtime.work / "tools"
    shutil.copytree(HELLO, tools / "hello")
    tool(tools / "fails", "fails", "echo partial; echo 'it broke' >&2; exit 4")
    tool(tools / "sleeper", "sleeper", "sleep 30")
    tool(tools / "env", "env", """python -c 'import os; print(os.environ.get("COLOUR"))'""")
    write(tools / "needs", {**VALID, "tool": {**VALID["tool"], "name": "needs_token"},
                            "auth": {"auth_provider": "serpapi"}})  # fmt: skip
    started_daemon(runtime, str(tools), "env")
    for args in CASES.values():  # every image built first: a build's progress shows only once
        runtime.run("invoke", str(tools), *args, "--no-daemon")
    for name, args in CASES.items():
        here = runtime.run("invoke", str(tools), *args, "--no-daemon")
        served = runtime.run("invoke", str(tools), *args)
        assert (served.returncode, served.stdout, served.stderr) == (here.returncode, here.stdout, here.stderr), name
    assert runtime.served(runtime.serving()) == 1 + len(CASES)


@pytest.mark.docker
def test_errors_before_the_call_read_the_same(runtime, docker_api):
    (runtime.work / "broken").mkdir()
    (runtime.work / "broken" / "pocket.json").write_text('{"tool": ')
    pid = started_daemon(runtime, str(HELLO), "hello", BODY)
    for source, said in (("broken", "fix the manifest first; `pocket validate broken`"), ("gone", "not found")):
        here = runtime.run("invoke", source, "x", "--body", "{}", "--no-daemon")
        served = runtime.run("invoke", source, "x", "--body", "{}")
        assert served.returncode == here.returncode == 2
        assert (served.stdout, served.stderr) == (here.stdout, here.stderr)
        assert said in served.stderr
    assert runtime.served(pid) == 3


@pytest.mark.docker
def test_a_build_shows_its_progress_through_the_process(runtime, docker_api):
    pid = started_daemon(runtime, str(HELLO), "hello", BODY)
    fresh = tool(runtime.work / "fresh", "fresh", "echo '{}'", marker=str(time.time_ns()))  # never built before
    served = runtime.run("invoke", str(fresh), "fresh", "--body", "{}")
    assert served.returncode == 0, served.stderr
    assert served.stderr.startswith("pocket: building image pocket-tool/fresh:")
    assert runtime.served(pid) == 2


# -- never stale --------------------------------------------------------------------------------------------


@pytest.mark.docker
def test_changed_settings_are_never_served_by_the_process_that_loaded_the_old_ones(runtime, docker_api):
    colour = tool(runtime.work / "colour", "colour", """python -c 'import os; print(os.environ.get("COLOUR"))'""")
    runtime.write_settings('[variables.colour]\nCOLOUR = "red"\n')
    old = started_daemon(runtime, str(colour), "colour")
    runtime.write_settings('[variables.colour]\nCOLOUR = "green"\n')
    changed = runtime.run("invoke", str(colour), "colour", "--body", "{}")
    assert changed.stdout == "green\n"  # run by the command itself: no process serves these settings yet
    wait_until(lambda: not alive(old), "the process with the old settings to exit")
    new = runtime.serving()
    assert runtime.run("invoke", str(colour), "colour", "--body", "{}").stdout == "green\n"
    assert runtime.served(new) == 1 and runtime.served(old) == 1
    # A POCKET_ variable is a setting too
    blue = runtime.run(
        "invoke", str(colour), "colour", "--body", "{}", env=runtime.env(POCKET_VARIABLES__COLOUR__COLOUR="blue")
    )
    assert blue.stdout == "blue\n" and runtime.served(new) == 1


@pytest.mark.docker
def test_an_edited_tool_is_rebuilt_and_an_edited_manifest_reloaded(runtime, docker_api):
    nonce = f"# {time.time_ns()}\n"  # contents never built before
    edited = tool(runtime.work / "edited", "edited", "python main.py", **{"main.py": nonce + "print('one')"})
    pid = started_daemon(runtime, str(edited), "edited")
    (edited / "main.py").write_text(nonce + "print('two')")
    rebuilt = runtime.run("invoke", str(edited), "edited", "--body", "{}")
    assert rebuilt.stdout == "two\n" and "pocket: building image pocket-tool/edited:" in rebuilt.stderr
    tool(edited, "edited", "python main.py --again", **{"main.py": "import sys; print(sys.argv[1:])"})
    reloaded = runtime.run("invoke", str(edited), "edited", "--body", "{}")
    assert reloaded.stdout == "['--again']\n", reloaded.stderr
    assert runtime.served(pid) == 3


# -- failures of the process, other users ---------------------------------------------------------------------


def interrupted(runtime: Runtime, docker_api: Any, name: str, interrupt: Any) -> tuple[int, int, str, str]:
    """A call of a tool sleeping 120 s, served by the local process, and `interrupt(pid, command)` once the tool
    runs: the process's pid, and the command's exit code, stdout and stderr."""
    slow = tool(runtime.work / name, name, "sleep 120")
    pid = started_daemon(runtime, str(HELLO), "hello", BODY)
    command = runtime.start("invoke", str(slow), name, "--body", "{}")
    try:
        wait_for_processes(docker_api, {"label": f"pocket-runner.tool={name}"}, "sleep", 1, timeout=120)
        interrupt(pid, command)
        out, err = command.communicate(timeout=60)
    finally:
        command.kill()
    return pid, command.returncode, out, err


@pytest.mark.docker
def test_a_process_killed_during_a_call_ends_the_command_with_a_clear_error(runtime, docker_api):
    try:
        pid, code, out, err = interrupted(runtime, docker_api, "slowkill", lambda pid, _: os.kill(pid, signal.SIGKILL))
    finally:
        for container in docker_api.containers(all=True, filters={"label": "pocket-runner.tool=slowkill"}):
            docker_api.remove_container(container["Id"], force=True)  # what the killed process left
    assert code == 1 and out == ""
    assert f"pocket: the local pocket process (pid {pid}) stopped answering during the call" in err
    assert "Traceback" not in err
    # Its socket is left behind: the next command runs its call itself and starts a new process
    after = runtime.run("invoke", str(HELLO), "hello", "--body", BODY)
    assert (after.returncode, after.stdout) == (0, GREETING)
    assert runtime.serving() != pid


@pytest.mark.docker
def test_a_process_stopped_with_sigterm_ends_its_calls_and_removes_their_containers(runtime, docker_api):
    pid, code, out, err = interrupted(runtime, docker_api, "slowterm", lambda pid, _: os.kill(pid, signal.SIGTERM))
    assert (code, out) == (1, "")
    assert err.endswith("pocket: the sandbox was closed\n"), err
    wait_until(lambda: not alive(pid), "the process to exit")
    assert docker_api.containers(all=True, filters={"label": "pocket-runner.tool=slowterm"}) == []


@pytest.mark.docker
def test_a_process_that_does_not_answer_is_run_around(runtime, docker_api):
    pid = started_daemon(runtime, str(HELLO), "hello", BODY)
    os.kill(pid, signal.SIGSTOP)
    try:
        result = runtime.run("invoke", str(HELLO), "hello", "--body", BODY)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (result.returncode, result.stdout) == (0, GREETING)
    notice = "pocket: running the call in this process: the local pocket process failed (it did not take the call)\n"
    assert result.stderr.startswith(notice)  # then, maybe, a build's progress
    wait_until(
        lambda: "dropped a call of 'hello': its command did not confirm it" in runtime.log(),
        "the process to drop the call",
    )
    assert runtime.served(pid) == 1  # the call ran once: in the command


@pytest.mark.docker
def test_another_users_process_is_refused(runtime, docker_api):
    pid = started_daemon(runtime, str(HELLO), "hello", BODY)
    path = str(next(runtime.sockets.glob("*.sock")))
    connect = (
        "import socket, struct, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n    print(type(e).__name__); raise SystemExit\n"
        'body = b\'{"protocol": 1, "call": {}}\'\n'
        "s.sendall(struct.pack('>I', len(body)) + body)\n"
        "print(s.recv(1000)[4:].decode())\n"
    )
    nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "/usr/bin/python3", "-c", connect]
    # The folder keeps everyone else out ...
    assert subprocess.run([*nobody, path], capture_output=True, text=True, check=True).stdout == "PermissionError\n"
    # ... and were it opened, the process itself checks who connects.
    runtime.root.chmod(0o755)
    runtime.sockets.chmod(0o755)
    os.chmod(path, 0o777)  # noqa: S103 (what the test is about)
    refused = subprocess.run([*nobody, path], capture_output=True, text=True, check=True).stdout
    assert json.loads(refused) == {"refused": "this process serves another user"}
    assert "refused a connection from uid 65534" in runtime.log()
    # A command does not use a folder others may enter.
    opened = runtime.run("invoke", str(HELLO), "hello", "--body", BODY)
    assert (opened.returncode, opened.stdout) == (0, GREETING)
    assert f"{runtime.sockets} is open to other users (mode 755; it must be 700)" in opened.stderr
    runtime.sockets.chmod(0o700)
    assert runtime.served(pid) == 1


# -- lifetime, signals, opting out ----------------------------------------------------------------------------


@pytest.mark.docker
def test_an_idle_process_exits_and_removes_its_containers(runtime, docker_api):
    runtime.write_settings("[cli]\ndaemon_idle_seconds = 3\n")
    first = runtime.run("invoke", str(HELLO), "hello", "--body", BODY)
    assert first.returncode == 0
    pid = runtime.serving()
    with socket.socket(socket.AF_UNIX) as waiting:  # a command that has not sent its call yet: not idle
        waiting.connect(str(next(runtime.sockets.glob("*.sock"))))
        assert runtime.run("invoke", str(HELLO), "hello", "--body", BODY).stdout == GREETING
    assert runtime.served(pid) == 1
    wait_until(lambda: not alive(pid), "the idle process to exit")
    assert list(runtime.sockets.glob("*.sock")) == [] and list(runtime.sockets.glob("*.lock")) == []
    owner = f"{socket.gethostname()}:{pid}:"
    left = docker_api.containers(all=True, filters={"label": "pocket-runner.owner"})
    assert [c for c in left if c["Labels"]["pocket-runner.owner"].startswith(owner)] == []
    assert "exiting: no call for 3 s" in runtime.log()


@pytest.mark.docker
@pytest.mark.parametrize(
    ("signum", "code", "said"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_ctrl_c_or_sigterm_of_the_command_stops_the_call_and_its_container(runtime, docker_api, signum, code, said):
    name = f"slow{signum}"
    pid, returncode, out, err = interrupted(runtime, docker_api, name, lambda _, command: command.send_signal(signum))
    assert (returncode, out) == (code, "")
    assert err.endswith(f"pocket: {said}\n") and "Traceback" not in err  # after the build's progress
    # Killed before the command ended (the pool's containers of that tool are still there, running no tool)
    running = docker_api.containers(filters={"label": f"pocket-runner.tool={name}"})
    assert all(b"sleep" not in _commands(docker_api, c["Id"]) for c in running)
    assert runtime.pids() == {pid}  # the process goes on serving
    assert runtime.run("invoke", str(HELLO), "hello", "--body", BODY).stdout == GREETING


def _commands(docker_api: Any, container: str) -> bytes:
    try:
        run = docker_api.exec_create(container, ["/bin/sh", "-c", "cat /proc/[0-9]*/cmdline"])
        return docker_api.exec_start(run["Id"])
    except Exception:  # gone meanwhile
        return b""


@pytest.mark.docker
def test_the_process_can_be_turned_off(runtime, docker_api):
    for opt_out in (["--no-daemon"], []):
        env = runtime.env() if opt_out else runtime.env(POCKET_CLI__DAEMON="false")
        for _ in range(2):
            result = runtime.run("invoke", str(HELLO), "hello", "--body", BODY, *opt_out, env=env)
            assert (result.returncode, result.stdout, result.stderr) == (0, GREETING, "")
    runtime.write_settings("[cli]\ndaemon = false\n")
    assert runtime.run("invoke", str(HELLO), "hello", "--body", BODY).stdout == GREETING
    assert not runtime.sockets.exists() or list(runtime.sockets.glob("*.sock")) == []


@pytest.mark.docker
def test_no_secret_reaches_the_log(runtime, docker_api):
    secret = "sk-test-" + os.urandom(8).hex()
    leak = tool(runtime.work / "leak", "leak", """python -c 'import os; print(os.environ["TOKEN"])'""")
    runtime.write_settings(f'[variables.leak]\nTOKEN = "{secret}"\n')
    started_daemon(runtime, str(leak), "leak")
    served = runtime.run(
        "invoke", str(leak), "leak", "--body", json.dumps({"password": secret}), "--var", f"X={secret}"
    )
    assert served.stdout == f"{secret}\n"
    assert secret not in runtime.log()
    assert secret not in "".join(p.name for p in runtime.sockets.iterdir())


# -- in this process ------------------------------------------------------------------------------------------


@pytest.mark.docker
def test_in_process_commands_start_and_use_the_process(cli, runtime, monkeypatch, docker_api):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime.root))
    for name in NO_DAEMON:
        monkeypatch.delenv(name)
    first = cli("invoke", str(HELLO), "hello", "--body", BODY, cwd=runtime.work)
    pid = runtime.serving()
    second = cli("invoke", str(HELLO), "hello", "--body", BODY, cwd=runtime.work)
    assert (first.returncode, first.stdout) == (second.returncode, second.stdout) == (0, GREETING), (first, second)
    assert second.stderr == "", runtime.log()  # the first may show a build, if the image was gone
    assert runtime.served(pid) == 1, runtime.log()


def test_the_key_follows_settings_files_and_variables(tmp_path, monkeypatch):
    monkeypatch.delenv("POCKET_CLI__DAEMON", raising=False)
    first = protocol.key(None, None, cwd=tmp_path)
    (tmp_path / "settings.toml").write_text("[sandbox]\ncpus = 0.5\n")
    second = protocol.key(None, None, cwd=tmp_path)
    monkeypatch.setenv("POCKET_SANDBOX__CPUS", "0.25")
    third = protocol.key(None, None, cwd=tmp_path)
    assert len({first.material, second.material, third.material}) == 3
    assert second.files == (tmp_path / "settings.toml",) and first.enabled is True
    assert protocol.key(str(tmp_path / "missing.toml"), None, cwd=tmp_path) is None  # the command reports it


@pytest.mark.parametrize(
    ("toml", "variable", "enabled"),
    [("", None, True), ("[cli]\ndaemon = false\n", None, False), ("[CLI]\nDaemon = false\n", "yes", True),
     ("", "off", False), ("", "maybe", None), ("[cli]\ndaemon = 'no'\n", None, False),
     ("[cli]\ndaemon = 3\n", None, None)],
)  # fmt: skip
def test_the_opt_out_is_read_as_the_settings_read_it(tmp_path, monkeypatch, toml, variable, enabled):
    (tmp_path / "settings.toml").write_text(toml)
    if variable is None:
        monkeypatch.delenv("POCKET_CLI__DAEMON", raising=False)
    else:
        monkeypatch.setenv("POCKET_CLI__DAEMON", variable)
    assert protocol.key(None, None, cwd=tmp_path).enabled is enabled


def test_a_folder_others_may_enter_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert protocol.directory() == tmp_path / "pocket-runner"
    (tmp_path / "pocket-runner").chmod(0o770)
    with pytest.raises(protocol.Unusable, match="open to other users"):
        protocol.directory()
    (tmp_path / "pocket-runner").rmdir()
    (tmp_path / "pocket-runner").symlink_to(tmp_path)
    with pytest.raises(protocol.Unusable, match="not a folder of this user's"):
        protocol.directory()


def test_frames_round_trip_and_garbage_is_refused():
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        protocol.send(left, {"out": "h\u00e9llo \udc80", "n": 1})
        assert protocol.receive(right) == {"out": "h\u00e9llo \udc80", "n": 1}
        left.sendall((protocol.MAX_FRAME + 1).to_bytes(4, "big"))
        with pytest.raises(ConnectionError, match="over the limit"):
            protocol.receive(right)
        left.close()
        assert protocol.receive(right) is None
