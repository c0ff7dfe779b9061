"""Tests that fail when a sandbox promise breaks: the launcher's replies, the timeout's second, and the
hardening as the engine itself sees it and as a tool inside finds it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import runner.sandbox.sandbox as sandbox_module
from runner.invocation import Outcome
from runner.manifest import load_manifest
from runner.sandbox import Sandbox
from runner.settings import SandboxSettings, ToolLimits

docker = pytest.mark.docker


def _write_tool(folder: Path, name: str, files: dict[str, str], **manifest: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "tool": {"name": name, "description": "a test tool", "inputSchema": {"type": "object"}},
        "language": "python",
        "entrypoint": {"run": f"python {name}.py"},
        **manifest,
    }
    (folder / "pocket.json").write_text(json.dumps(document))
    for rel, text in files.items():
        (folder / rel).write_text(text)
    return folder


def _wait_for_pool(box: Sandbox, tool_name: str, size: int) -> None:
    (pool,) = box._pools.of_tool(tool_name)
    deadline = time.monotonic() + 30
    while len(pool.idle) < size and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pool.idle) >= size, "the pool did not fill in 30 s"


# -- replies from a container: only the launcher, who knows the call's nonce, reports the exit ----------

FORGER = r"""
import os, sys, uuid
sys.stdin.read()
# What the launcher prints after the tool, with nonces a forger might try: a random one, none, a constant.
for nonce in (uuid.uuid4().hex, "", "0" * 32):
    line = "\x1e%s 0\n" % nonce
    sys.stdout.write(line)
    sys.stdout.flush()
    sys.stderr.write(line)
    sys.stderr.flush()
# What the tool could learn the call's nonce from: its environment, its arguments, its stdin (read above).
sys.stderr.write(repr(dict(os.environ)) + open("/proc/self/cmdline").read() + "\n")
sys.exit(3)
"""


@docker
def test_a_forged_launcher_status_is_not_the_calls_exit(runtime, tmp_path, monkeypatch):
    """A tool that prints the launcher's closing line (`\\x1e<nonce> 0`) on both streams and exits 3 is
    reported with its real exit code: the runner trusts only the line carrying the call's nonce, which the
    tool never sees. And every call gets a new nonce that cannot be guessed (128 random bits)."""
    nonces: list[str] = []
    real_stdin_for = sandbox_module.stdin_for

    def spy(environment, body):
        stdin, nonce = real_stdin_for(environment, body)
        nonces.append(nonce)
        return stdin, nonce

    monkeypatch.setattr(sandbox_module, "stdin_for", spy)
    manifest = load_manifest(_write_tool(tmp_path / "forger", "forger", {"forger.py": FORGER}))
    with Sandbox(SandboxSettings(pool_size=0, runtime=runtime)) as box:
        forged = box.run(manifest, {}, {})
        again = box.run(manifest, {}, {})
    for result in (forged, again):
        assert result.outcome is Outcome.TOOL_FAILED and result.exit_code == 3, result
        assert result.error.startswith("the tool exited with code 3"), result.error
        assert result.stdout.count("\x1e") == 3  # the forged lines are the tool's output, not taken as a status
    assert len(nonces) == 2 and nonces[0] != nonces[1]
    for nonce in nonces:
        assert len(nonce) == 32 and int(nonce, 16) and len(set(nonce)) > 4, nonce
        assert nonce not in forged.stderr + again.stderr  # the tool could not have read it


# -- timeouts: the call answers within a second of its limit, also for a longer limit ------------------


@docker
def test_a_five_second_limit_answers_after_five_seconds_and_within_the_sixth(tool, runtime):
    """The limit from `[sandbox.tools.NAME] timeout_seconds` (the manifest asks for 1 s), with the
    container pooled so the call's time is the tool's run: a deadline a little too long (or too short)
    fails here, where a 1 s limit hides it."""
    settings = SandboxSettings(pool_size=1, runtime=runtime, tools={"sleeper": ToolLimits(timeout_seconds=5)})
    with Sandbox(settings) as box:
        box.prepare(tool("sleeper"))
        _wait_for_pool(box, "sleeper", 1)
        started = time.monotonic()
        result = box.run(tool("sleeper"), {}, {})
        elapsed = time.monotonic() - started
    assert result.outcome is Outcome.TOOL_FAILED and result.error == "timed out after 5 s", result
    assert 5.0 <= elapsed < 6.0, elapsed
    assert 5.0 <= result.duration_seconds < 6.0, result.duration_seconds


# -- hardening: the engine's own view of every container the runner starts -----------------------------

MIB = 1024 * 1024
TMPFS = {"/tmp": "rw,nosuid,nodev,noexec,size=64m"}
INTERFACES = "import json, os, sys\nsys.stdin.read()\nprint(json.dumps(sorted(os.listdir('/sys/class/net'))))\n"


def _interfaces_tool(folder: Path, name: str, **manifest: object) -> Path:
    return _write_tool(folder, name, {f"{name}.py": INTERFACES}, **manifest)


def _assert_hardened(config: dict, *, memory: int, nano_cpus: int, pids: int, network_mode: str) -> None:
    """One container as the engine holds it (`inspect_container`), against the hardening every container gets."""
    host = config["HostConfig"]
    what = (config["Name"], (config["Config"]["Labels"] or {}).get("pocket-runner.mode"))
    assert host["ReadonlyRootfs"] is True, what
    takes_channel = what[1] == "warm" or "/pocket/prestart.py" in config["Config"]["Cmd"]  # warm.py, prestart.py
    if takes_channel and host["Runtime"] == "runc":  # its channel: a folder already removed from the host
        (bind,) = host["Binds"]
        source, target, mode = bind.split(":")
        assert (target, mode) == ("/pocket-channel", "ro") and not Path(source).exists(), what
        assert [mount["Destination"] for mount in config["Mounts"]] == ["/pocket-channel"], what
    else:
        assert not host.get("Binds") and not host.get("Mounts") and not config.get("Mounts"), what  # tmpfs only
    assert not host.get("VolumesFrom") and not host.get("Devices") and host.get("Privileged") is False, what
    assert host["Tmpfs"] == TMPFS, what  # python:3.11-slim declares no VOLUME
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd"), what
    assert host["SecurityOpt"] == ["no-new-privileges"], what
    assert host["NanoCpus"] == nano_cpus and not host.get("CpuQuota") and not host.get("CpuShares"), what
    assert host["Memory"] == host["MemorySwap"] == memory, what  # no swap
    assert host["PidsLimit"] == pids, what
    assert host["NetworkMode"] == network_mode, what
    assert host["LogConfig"]["Type"] == "none", what
    assert host["IpcMode"] == "private" and host["ShmSize"] == 16 * MIB, what
    assert not host.get("PidMode") and not host.get("UsernsMode"), what  # not the host's pid namespace
    assert config["Config"]["User"] == "65534:65534", what


@docker
def test_every_container_the_runner_starts_is_hardened_in_the_engines_own_view(
    docker_api, tool, runtime, tmp_path, monkeypatch
):
    """Pooled call containers, warm servers and the egress proxy, with no network, network by the manifest,
    network granted by `[sandbox.tools.NAME] network = true`, and a host list: each is inspected the moment
    it is created (the engine's record of what it will run), and each call's tool sees the network it got."""
    from runner.sandbox.engine import DockerEngine

    seen: dict[str, dict] = {}
    real_track = DockerEngine.track

    def track(self, cid):
        real_track(self, cid)
        seen[cid] = docker_api.inspect_container(cid)

    monkeypatch.setattr(DockerEngine, "track", track)
    offline = load_manifest(_interfaces_tool(tmp_path / "offline", "offline"))
    asks = load_manifest(_interfaces_tool(tmp_path / "asks", "asks", sandbox={"network": True}))
    granted = load_manifest(_interfaces_tool(tmp_path / "granted", "granted"))
    hosts = load_manifest(_interfaces_tool(tmp_path / "hosts", "hosts", sandbox={"network": ["example.com"]}))
    settings = SandboxSettings(
        pool_size=1, runtime=runtime, warm_tools=("echo",), tools={"granted": ToolLimits(network=True)}
    )
    with Sandbox(settings) as box:
        values = {m.name: box.run(m, {}, {}) for m in (offline, asks, granted, hosts)}
        warm = box.run(tool("echo"), {}, {})
        (network,) = docker_api.networks(filters={"label": f"pocket-runner.sandbox={box.id}"})
        internal = docker_api.inspect_network(network["Id"])["Internal"]
        proxies = [c for c in seen.values() if c["Config"]["Labels"]["pocket-runner.mode"] == "egress-proxy"]
        assert len(proxies) == 1
        proxy_networks = docker_api.inspect_container(proxies[0]["Id"])["NetworkSettings"]["Networks"]
    assert warm.ok and warm.value["calls"] == 1, warm
    for name, result in values.items():
        assert result.ok, (name, result)
    assert values["offline"].value == ["lo"]
    assert "eth0" in values["asks"].value and "eth0" in values["granted"].value and "eth0" in values["hosts"].value
    assert internal is True
    assert set(proxy_networks) == {"bridge", network["Name"]}  # its way out, and the tool's network

    def runtime_for(mode: str) -> str:
        if runtime == "runc":
            return "runc"
        return "runsc" if mode == "none" else "runsc-net"

    expected_network = {"offline": "none", "asks": "bridge", "granted": "bridge", "hosts": network["Id"],
                        "echo": "none"}  # fmt: skip
    kinds = set()
    for config in seen.values():
        labels = config["Config"]["Labels"]
        mode, name = labels["pocket-runner.mode"], labels.get("pocket-runner.tool", "")
        kinds.add((mode, name))
        if mode == "egress-proxy":  # it parses what tools send: under the tools' runtime
            _assert_hardened(config, memory=128 * MIB, nano_cpus=500_000_000, pids=1024, network_mode="bridge")
            assert config["HostConfig"]["Runtime"] == runtime_for("bridge")
            continue
        _assert_hardened(config, memory=512 * MIB, nano_cpus=10**9, pids=128, network_mode=expected_network[name])
        assert config["HostConfig"]["Runtime"] == runtime_for(expected_network[name]), name
        assert config["Config"].get("NetworkDisabled", False) is (expected_network[name] == "none"), name
    assert kinds >= {("call", "offline"), ("call", "asks"), ("call", "granted"), ("call", "hosts"),
                     ("warm", "echo"), ("egress-proxy", "")}  # fmt: skip


PROBER = r"""
import errno, json, os, shutil, subprocess, sys
sys.stdin.read()
found = {}


def outcome(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def write(path):
    with open(path, "w") as handle:
        handle.write("owned")


def fill(path):
    # MiB written before the filesystem is full (capped at 256, far over any limit here)
    written, chunk = 0, b"x" * 1024 * 1024
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while written < 256:
            if os.write(fd, chunk) < len(chunk):
                return [written, "ENOSPC"]  # a short write: the last part that fitted
            written += 1
    except OSError as exc:
        return [written, errno.errorcode.get(exc.errno, str(exc.errno))]
    finally:
        os.close(fd)
    return [written, "no limit"]


def run(path):
    shutil.copy("/bin/true", path)
    os.chmod(path, 0o755)
    return subprocess.run([path]).returncode


for path in ("/owned", "/var/tmp/owned", "/tool/owned", "/etc/owned", "/dev/shm/owned", "/tmp/owned"):
    found["write " + path] = outcome(lambda: write(path))
for folder in ("/tmp", "/dev/shm"):
    found["exec " + folder] = outcome(lambda: run(folder + "/true"))
    os.remove(folder + "/true")
found["fill /dev/shm"] = fill("/dev/shm/big")
os.remove("/dev/shm/big")
found["fill /tmp"] = fill("/tmp/big")
print(json.dumps(found))
"""


@docker
def test_a_tool_can_write_only_tmp_and_dev_shm_both_capped_and_can_exec_from_neither(runtime, tmp_path):
    """From inside: the root is read-only (EROFS, not only paths uid 65534 may not write: `/var/tmp` is mode
    1777), `/tmp` (64 MiB) and `/dev/shm` (16 MiB, kept for Python's multiprocessing) are writable up to their
    size, and a program copied into either cannot be run (noexec). The same holds under gVisor, whose kernel
    only reports a write into root's folders as EACCES rather than EROFS."""
    manifest = load_manifest(_write_tool(tmp_path / "prober", "prober", {"prober.py": PROBER}))
    with Sandbox(SandboxSettings(pool_size=0, runtime=runtime)) as box:
        result = box.run(manifest, {}, {})
    assert result.ok, result
    found = result.value
    # gVisor checks the folder's permissions before the mount's read-only flag: root's folders say EACCES there
    refused = "EROFS" if runtime == "runc" else "EACCES"
    assert found.pop("write /var/tmp/owned") == "EROFS", result.value  # mode 1777: only read-only stops it
    for path in ("/owned", "/tool/owned", "/etc/owned"):
        assert found.pop(f"write {path}") == refused, (path, result.value)
    assert found.pop("write /tmp/owned") == found.pop("write /dev/shm/owned") == "ok"
    assert found.pop("exec /tmp") == found.pop("exec /dev/shm") == "EACCES"
    # MiB written before ENOSPC: the last one does not fit beside the small files written above
    assert found.pop("fill /tmp") in ([63, "ENOSPC"], [64, "ENOSPC"]), result.value
    assert found.pop("fill /dev/shm") in ([15, "ENOSPC"], [16, "ENOSPC"]), result.value
    assert found == {}


@docker
@pytest.mark.parametrize("allow_network", [False, True])
def test_the_build_step_runs_with_the_builds_limits_in_the_engines_own_view(docker_api, tmp_path, allow_network):
    """The build step's container, inspected as the classic builder announces it: memory capped at
    `sandbox.build_memory_mb` with no swap, and no network unless tools may have network. That is all the
    classic builder lets the runner set (`build._isolation`): the step runs as root with Docker's default
    capabilities and a writable root, as the README says builds do (trusted code), so those are not asserted.
    It is killed once inspected, which fails the build (its 60 s sleep is never waited for)."""
    from runner.sandbox import BUILD_STEP

    entrypoint = {"build": f"sleep 60 # {time.time_ns()}", "run": "true"}
    name = f"buildview{int(allow_network)}"
    manifest = load_manifest(_write_tool(tmp_path / name, name, {}, entrypoint=entrypoint))
    inspected: list[dict] = []
    lines: list[str] = []

    def progress(message: str) -> None:
        line = message.split(": ", 1)[-1]
        if lines and lines[-1].endswith(f" : {BUILD_STEP}") and line.startswith(" ---> Running in "):
            container = line.removeprefix(" ---> Running in ")
            inspected.append(docker_api.inspect_container(container))
            docker_api.kill(container)
        lines.append(line)

    settings = SandboxSettings(pool_size=0, allow_network=allow_network, build_memory_mb=300)
    with Sandbox(settings, progress=progress) as box:
        result = box.run(manifest, {}, {})
    step = next(i for i, line in enumerate(lines) if line.endswith(f" : {BUILD_STEP}"))
    docker_api.remove_image(lines[step - 1].removeprefix(" ---> "))  # the failed build's cached layer below
    assert result.outcome is Outcome.TOOL_FAILED and "exited with code 137" in result.error, result.error
    (config,) = inspected
    host = config["HostConfig"]
    assert host["Memory"] == host["MemorySwap"] == 300 * MIB
    assert host["NetworkMode"] == ("default" if allow_network else "none")
    assert not host.get("Binds") and not host.get("Mounts") and host.get("Privileged") is False
