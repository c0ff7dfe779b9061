"""Side by side, in one run, on tools-example/hello: how long one tool call takes, and every target of the
sandbox's performance as a ratio, with met / MISSED.

    .venv/bin/python benchmarks/bench_sandbox.py [--calls 30] [--pause 1.0] [--no-hyperpocket] [--no-gvisor]
                                                 [--no-rebuild] [--no-cli] [--no-kubernetes]

Modes, each measured over N sequential calls (p50, p95), `--pause` seconds apart (an agent's turn between calls;
0 measures calls back to back, which the engine's container starts per second bound: printed too):
  docker-run   plain `docker run --rm -i --network none IMAGE sh -c RUN` of the tool's command (the baseline)
  default      pocket-runner, a fresh pre-started container per call (the pool)
  warm         pocket-runner warm mode: the handler loaded once, called per request
  warm b2b     the same warm calls back to back (no pause: caches and CPUs stay warm)
  channel echo a line to an echo process in a container and back through a warm container's channel (a unix
               socket in a folder mounted into it): the transport of warm mode's calls under runc, its floor
  attach echo  the same through the engine's attach stream: the transport under gVisor and on Kubernetes
  gvisor       default mode with sandbox.runtime = "runsc" (gVisor; scripts/setup.sh --gvisor)
  gvisor-warm  warm mode under gVisor
  hyperpocket  hyperpocket 0.5.7 + hyperdock-container, its baseImage pointed at the same local image
                (installed in benchmarks/.venv-hyperpocket on first run)
Then 8 concurrent calls against 1 (default and warm mode), next to the same for bare processes: the tool's
command started 1 and 8 at a time by a script inside one container (no sandbox, no engine per call), which is
what this machine's cores allow at best; a burst of 64 concurrent calls (every one must succeed, and no more
than the tool's cap, sandbox.max_concurrent, may run at once); and the rebuild of a `pip install .` tool
depending on pydantic after an edit of its code alone, against its first build (medians of three tools, with
its build backend declared and without, as in hyperpocket's tools); the
one-shot `pocket invoke` against `docker run` and the import time (benchmarks/bench_cli.py, bench_import.py);
the Kubernetes backend on the stand-in API server against the Docker one (bench_kubernetes.py). Prints a table
and the ratios against the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench_cli  # noqa: E402 - the one-shot command, in this run too
import bench_kubernetes  # noqa: E402 - the Kubernetes backend on the stand-in, in this run too
from bench_import import pocket_import_seconds  # noqa: E402

from runner.sandbox.stream import Stream  # noqa: E402 - after the path

HELLO = ROOT / "tools-example" / "hello"
HP_VENV = ROOT / "benchmarks" / ".venv-hyperpocket"
BODY = {"name": "Ada"}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def timed(call, n: int, pause: float) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
        if pause:
            time.sleep(pause)
    return samples


def bench_docker_run(image: str, run: str, n: int, pause: float) -> list[float]:
    body = json.dumps(BODY).encode()
    command = ["docker", "run", "--rm", "-i", "--network", "none", image, "/bin/sh", "-c", run]

    def call() -> None:
        out = subprocess.run(command, input=body, capture_output=True, check=True)
        assert json.loads(out.stdout) == {"greeting": "Hello, Ada!"}, out

    call()  # warm the engine's caches like every other mode gets
    return timed(call, n, pause)


def bench_pocket(settings, n: int, pause: float) -> tuple[list[float], list[float], float, float, float]:
    """Sequential calls `pause` apart, then as many back to back; then 1 against 8 concurrent calls."""
    from runner.pocket import Pocket

    with Pocket(tools=[HELLO], settings=settings) as pocket:
        pocket.prepare("hello", warm_workers=8)  # the image, the pool, and in warm mode 8 ready servers

        def call() -> None:
            result = pocket.invoke("hello", BODY)
            assert result.ok and result.value == {"greeting": "Hello, Ada!"}, result

        call()
        wait_for_pool(pocket)
        paced = timed(call, n, pause)
        wait_for_pool(pocket)
        back_to_back = timed(call, n, 0.0)
        one, eight, busy = concurrent(pocket)
    return paced, back_to_back, one, eight, busy


def wait_for_pool(pocket, timeout: float = 120.0) -> None:
    """Until the default mode's pool is full again (warm mode has none): a burst or a series starts from there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pools = pocket.sandbox._pools.of_tool("hello")
        if not pools or (len(pools[0].idle) >= pools[0].size and not pools[0].starting):
            break
        time.sleep(0.05)
    time.sleep(0.3)  # the removals of the calls before run in this pause, not during the next calls


def burst(settings, calls: int) -> tuple[int, int, int, float]:
    """`calls` concurrent calls from a full pool: how many succeeded, the most in containers at once, the tool's
    cap, and the wall time."""
    from runner.pocket import Pocket

    with Pocket(tools=[HELLO], settings=settings) as pocket:
        pocket.prepare("hello")
        wait_for_pool(pocket)
        box = pocket.sandbox
        most, done = 0, threading.Event()

        def sample() -> None:
            nonlocal most
            while not done.is_set():
                most = max(most, len(box._in_flight))
                time.sleep(0.0005)

        sampler = threading.Thread(target=sample)
        sampler.start()

        async def run() -> list:
            return await asyncio.gather(*(pocket.ainvoke("hello", BODY, timeout=300) for _ in range(calls)))

        started = time.perf_counter()
        results = asyncio.run(run())
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    ok = sum(1 for r in results if r.ok and r.value == {"greeting": "Hello, Ada!"})
    return ok, most, settings.sandbox.max_concurrent, wall


REBUILD_PYPROJECT = """
[project]
name = "bench-rebuild"
version = "0.1.0"
dependencies = ["pydantic>=2,!=1.0.{nonce}"]  # the `!=` only makes it new: no earlier build's step is reused

[tool.setuptools]
py-modules = ["greeting"]
"""
BUILD_SYSTEM = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
"""
# The two shapes of a `pip install .` tool: its build backend declared, or none, as in all of hyperpocket's tools
# (pip builds those with setuptools)
REBUILD_SHAPES = {"[build-system]": BUILD_SYSTEM + REBUILD_PYPROJECT, "no [build-system]": REBUILD_PYPROJECT}
REBUILD_CODE = """
import json, sys
import pydantic

class Body(pydantic.BaseModel):
    name: str

print(json.dumps({{"greeting": "{word}, " + Body.model_validate_json(sys.stdin.read()).name}}))
"""


REBUILDS = 3  # tools built, each once and again after a code edit: the medians of their times are compared


def bench_rebuild(settings) -> dict[str, tuple[list[float], list[float]]] | str:
    """Per shape of pyproject.toml, seconds of the first builds of REBUILDS `pip install .` tools depending on
    pydantic, and of their rebuilds after an edit of the code alone. Medians: a first build downloads its
    dependencies (1-2 s of spread here)."""
    measured = {}
    for shape, pyproject in REBUILD_SHAPES.items():
        firsts, rebuilds = [], []
        for _ in range(REBUILDS):
            times = _build_and_rebuild(settings, pyproject)
            if isinstance(times, str):
                return times
            firsts.append(times[0])
            rebuilds.append(times[1])
        measured[shape] = firsts, rebuilds
    return measured


def _build_and_rebuild(settings, pyproject: str) -> tuple[float, float] | str:
    """Seconds of the first build of a `pip install .` tool depending on pydantic (a dependency nobody cached
    before: its pyproject is new), and of its rebuild after an edit of the code alone."""
    from runner.manifest import load_manifest
    from runner.sandbox import Sandbox

    nonce = int.from_bytes(os.urandom(4), "big")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "rebuild")
        folder.mkdir()
        (folder / "pyproject.toml").write_text(pyproject.format(nonce=nonce))
        (folder / "greeting.py").write_text(REBUILD_CODE.format(word="Hello"))
        (folder / "pocket.json").write_text(json.dumps({
            "tool": {"name": f"rebuild-{nonce:x}", "description": "greets", "inputSchema": {"type": "object"}},
            "language": "python", "entrypoint": {"build": "pip install .", "run": "cd / && python -m greeting"},
        }))  # fmt: skip
        with Sandbox(settings.sandbox.model_copy(update={"pool_size": 0})) as box:
            times = []
            for word in ("Hello", "Bonjour"):
                (folder / "greeting.py").write_text(REBUILD_CODE.format(word=word))
                manifest = load_manifest(folder)
                started = time.perf_counter()
                tag = box.image(manifest)
                times.append(time.perf_counter() - started)
                result = box.run(manifest, BODY, {})
                if result.value != {"greeting": f"{word}, Ada"}:
                    return f"the rebuilt tool answered {result.value!r}: {result.error}"
        with contextlib.suppress(Exception):
            box.api.remove_image(tag)  # this run's; the first build's image went when it was superseded
    return times[0], times[1]


def busy_cpu_seconds() -> float:
    """CPU time all processes of the machine used so far (user+system+irq, from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def concurrent(pocket) -> tuple[float, float, float]:
    """Median wall time of 1 call and of 8 concurrent calls (ainvoke), 3 rounds each, pool refilled between;
    and how busy the machine's CPUs were during the 8 calls (1.0 = every core all the time)."""

    async def batch(k: int) -> float:
        started = time.perf_counter()
        results = await asyncio.gather(*(pocket.ainvoke("hello", BODY) for _ in range(k)))
        assert all(r.ok for r in results), results
        return time.perf_counter() - started

    ones, eights, busy = [], [], []
    for _ in range(3):
        time.sleep(2.5)  # a full pool, as an agent's burst would find it
        ones.append(asyncio.run(batch(1)))
        time.sleep(2.5)
        cpu = busy_cpu_seconds()
        eights.append(asyncio.run(batch(8)))
        busy.append((busy_cpu_seconds() - cpu) / (eights[-1] * (os.cpu_count() or 1)))
    return statistics.median(ones), statistics.median(eights), statistics.median(busy)


BARE_SCRIPT = textwrap.dedent(
    """
    import json, statistics, subprocess, sys, time
    run, body, rounds = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])

    def batch(k):
        started = time.perf_counter()
        procs = [subprocess.Popen(["/bin/sh", "-c", run], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                 for _ in range(k)]
        outs = [p.communicate(body)[0] for p in procs]
        assert all(b"Hello" in out for out in outs), outs
        return time.perf_counter() - started

    ones, eights = [], []
    for _ in range(rounds):
        time.sleep(0.3)
        ones.append(batch(1))
        time.sleep(0.3)
        eights.append(batch(8))
    print(json.dumps([statistics.median(ones), statistics.median(eights)]))
    """
)


def bench_bare(image: str, run: str) -> tuple[float, float]:
    """1 and 8 concurrent runs of the tool's command as plain processes in one container (median of 9 rounds)."""
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "python3", "-c", BARE_SCRIPT, run, json.dumps(BODY), "9"],
        capture_output=True,
        check=True,
        text=True,
    )
    one, eight = json.loads(out.stdout)
    return one, eight


ECHO = "import os, sys\nfor line in sys.stdin.buffer:\n    os.write(1, line)\n"


def round_trips(transport: Any, n: int, pause: float) -> list[float]:
    """Seconds of n round trips of one JSON line through `transport` (an attach `Stream` or a `Channel`: read as
    warm calls read them) to an echo process and back, `pause` apart, after 5 that warm the interpreter up."""
    samples = []
    for i in range(n + 5):
        echoed = bytearray()

        def on_frame(kind: int, payload: bytes, echoed: bytearray = echoed) -> bool:
            echoed.extend(payload)
            return not echoed.endswith(b"\n")

        started = time.perf_counter()
        transport.send(json.dumps({"id": i, "body": BODY}).encode() + b"\n", time.monotonic() + 10, on_frame)
        if not echoed.endswith(b"\n"):
            transport.read_until(time.monotonic() + 10, on_frame)
        if i >= 5:
            samples.append(time.perf_counter() - started)
        time.sleep(pause)
    return samples


def bench_channel_floor(image: str, n: int, pause: float) -> list[float]:
    """Round trips of one JSON line through a warm container's channel (runner.sandbox.channel: a unix socket in a
    folder mounted read-only into the container) to an echo process and back, read as warm calls read it, with
    nothing else of the runner's around it: the transport of warm mode's calls under runc."""
    import docker

    from runner.sandbox.channel import MOUNT, SOCKET_NAME, Channels

    api = docker.APIClient()
    channels = Channels()
    listener = channels.open()
    echo = "import socket\nconnections = [socket.socket(socket.AF_UNIX) for _ in range(2)]\n"
    echo += f"for c in connections:\n    c.connect('{MOUNT}/{SOCKET_NAME}')\nreplies = connections[0]\n"
    echo += "replies.recv(1)\nfor line in replies.makefile('rb'):\n    replies.sendall(line)\n"
    host_config = api.create_host_config(binds=listener.binds, network_mode="none", read_only=True)
    container = api.create_container(
        image, command=["python3", "-c", echo], user="65534:65534", host_config=host_config, network_disabled=True
    )
    try:
        attached = Stream(api.attach_socket(container["Id"], params={"stdout": 1, "stderr": 1, "stream": 1}))
        api.start(container["Id"])
        channel = listener.accept(attached)
        assert channel is not None, "the echo process did not connect to its channel"
        samples = round_trips(channel, n, pause)
        channel.close()
        attached.close()
        return samples
    finally:
        api.remove_container(container["Id"], force=True)
        channels.close()


def bench_attach_floor(image: str, n: int, pause: float) -> list[float]:
    """Round trips of one JSON line through the engine's attach stream to an echo process in a container and
    back: the transport warm mode's calls take, with nothing of the runner's around it (its floor here)."""
    import docker

    api = docker.APIClient()
    container = api.create_container(image, command=["python3", "-c", ECHO], stdin_open=True, network_disabled=True)
    try:
        stream = Stream(api.attach_socket(container["Id"], params={"stdin": 1, "stdout": 1, "stream": 1}))
        api.start(container["Id"])
        samples = round_trips(stream, n, pause)
        stream.close()
        return samples
    finally:
        api.remove_container(container["Id"], force=True)


HP_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from hyperpocket import Pocket
    tool_dir, n, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    pocket = Pocket(tools=[tool_dir])
    body = {"name": "Ada"}
    first = pocket.invoke("hello", body)
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        out = pocket.invoke("hello", body)
        samples.append(time.perf_counter() - t)
        if pause:
            time.sleep(pause)
    print("RESULT " + json.dumps({"samples": samples, "first": str(first), "last": str(out)}))
    """
)


def ensure_hyperpocket() -> str | None:
    """Path of the python of a venv with hyperpocket 0.5.7, installing it when missing; None and a reason if not."""
    python = HP_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(HP_VENV)], check=True)
    check = subprocess.run([str(python), "-c", "import hyperpocket, hyperdock_container"], capture_output=True)
    if check.returncode != 0:
        print("installing hyperpocket==0.5.7 and hyperdock-container into", HP_VENV, file=sys.stderr)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "hyperpocket==0.5.7", "hyperdock-container"],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            return None
    return str(python)


def bench_hyperpocket(image: str, n: int, pause: float) -> tuple[list[float] | None, str]:
    python = ensure_hyperpocket()
    if python is None:
        return None, "pip install hyperpocket==0.5.7 hyperdock-container failed"
    with tempfile.TemporaryDirectory() as tmp:
        tool = HP_VENV / "tool" / "hello"  # a fixed path: hyperpocket names its image after it, so it is reused
        shutil.rmtree(tool, ignore_errors=True)
        shutil.copytree(HELLO, tool)
        manifest = json.loads((tool / "pocket.json").read_text())
        manifest.pop("language", None)
        manifest["baseImage"] = image  # the same local python:3.11-slim image: no registry here
        manifest["entrypoint"].pop("handler", None)
        (tool / "pocket.json").write_text(json.dumps(manifest))
        proc = subprocess.run(
            [python, "-c", HP_SCRIPT, str(tool), str(n), str(pause)],
            capture_output=True,
            text=True,
            cwd=tmp,
            timeout=900,
        )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            data = json.loads(line[7:])
            if "Hello, Ada!" not in data["last"]:
                return None, f"hyperpocket ran but returned {data['last'][:200]!r}"
            return data["samples"], ""
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
    return None, "hyperpocket failed: " + " | ".join(tail)


class Table:
    """The targets, each a measured ratio (or fact) beside its target, met or MISSED."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, bool | None]] = []

    def add(self, what: str, measured: str, target: str, ok: bool | None) -> None:
        self.rows.append((what, measured, target, ok))

    def print(self) -> None:
        width = max(len(what) for what, *_ in self.rows)
        print(f"{'target':<{width}}  {'measured':>12}  {'target':>10}  verdict")
        for what, measured, target, ok in self.rows:
            verdict = "-" if ok is None else ("met" if ok else "MISSED")
            print(f"{what:<{width}}  {measured:>12}  {target:>10}  {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between sequential calls (an agent's turn)")
    parser.add_argument("--pool", type=int, default=8, help="sandbox.pool_size for the default mode")
    parser.add_argument("--no-hyperpocket", action="store_true")
    parser.add_argument("--no-gvisor", action="store_true")
    parser.add_argument("--no-rebuild", action="store_true")
    parser.add_argument("--no-cli", action="store_true", help="skip the one-shot command and the import time")
    parser.add_argument("--no-kubernetes", action="store_true", help="skip the Kubernetes backend (on the stand-in)")
    args = parser.parse_args()

    from runner.manifest import load_manifest
    from runner.sandbox import Sandbox
    from runner.settings import Runtime, SandboxSettings, Settings

    tmp = Path(tempfile.mkdtemp(prefix="pocket-bench-"))
    base = SandboxSettings()
    manifest = load_manifest(HELLO)
    with Sandbox(base) as box:
        image = box.image(manifest)
        base_image = box.base_image(manifest)
    print(
        f"tool image {image} (base {base_image}), {args.calls} calls per mode, pause {args.pause}s, "
        f"pool_size {args.pool}, {os.cpu_count()} cpus",
        file=sys.stderr,
    )

    rows: dict[str, list[float] | None] = {}
    notes: dict[str, str] = {}
    rows["docker-run"] = bench_docker_run(image, manifest.entrypoint.run, args.calls, args.pause)
    default_settings = Settings(
        cache_dir=tmp / "c", data_dir=tmp / "d", sandbox=base.model_copy(update={"pool_size": args.pool})
    )
    rows["default"], rows["default b2b"], one_default, eight_default, busy_default = bench_pocket(
        default_settings, args.calls, args.pause
    )
    warm_settings = Settings(
        cache_dir=tmp / "c", data_dir=tmp / "d", sandbox=base.model_copy(update={"warm_tools": ("hello",)})
    )
    rows["warm"], rows["warm b2b"], one_warm, eight_warm, busy_warm = bench_pocket(
        warm_settings, args.calls, args.pause
    )
    rows["channel echo"] = bench_channel_floor(image, args.calls, args.pause)
    rows["attach echo"] = bench_attach_floor(image, args.calls, args.pause)
    if args.no_gvisor:
        rows["gvisor"] = rows["gvisor-warm"] = None
        notes["gvisor"] = notes["gvisor-warm"] = "skipped (--no-gvisor)"
    else:
        for mode, settings in (("gvisor", default_settings), ("gvisor-warm", warm_settings)):
            gvisor = settings.model_copy(
                update={"sandbox": settings.sandbox.model_copy(update={"runtime": Runtime.RUNSC})}
            )
            rows[mode] = bench_pocket(gvisor, args.calls, args.pause)[0]
    one_bare, eight_bare = bench_bare(image, manifest.entrypoint.run)
    burst_ok, burst_most, burst_cap, burst_wall = burst(default_settings, 64)
    if args.no_hyperpocket:
        rows["hyperpocket"], notes["hyperpocket"] = None, "skipped (--no-hyperpocket)"
    else:
        rows["hyperpocket"], notes["hyperpocket"] = bench_hyperpocket(base_image, args.calls, args.pause)
    rebuild = "skipped (--no-rebuild)" if args.no_rebuild else bench_rebuild(default_settings)
    one_shot = None if args.no_cli else (bench_cli.ratio(bench_cli.measure(10)[0]), pocket_import_seconds(20))
    kubernetes = None if args.no_kubernetes else bench_kubernetes.compare(args.calls, 32)

    print()
    print(f"{'mode':<12} {'p50 ms':>9} {'p95 ms':>9}")
    stats = {}
    for mode, samples in rows.items():
        if samples is None:
            print(f"{mode:<12} {'-':>9} {'-':>9}   {notes.get(mode, '')}")
            continue
        stats[mode] = (pct(samples, 0.5) * 1000, pct(samples, 0.95) * 1000)
        print(f"{mode:<12} {stats[mode][0]:>9.1f} {stats[mode][1]:>9.1f}")
    print("(default b2b: the same calls back to back, no pause, bound by the engine's container starts per second)")
    print("(channel / attach echo: a line to an echo process in a container and back: the floor of a call over each)")
    print()
    print(f"{'concurrency':<12} {'1 call ms':>9} {'8 calls ms':>10} {'ratio':>6}  CPU busy during the 8")
    for mode, one, eight, busy in (
        ("default", one_default, eight_default, busy_default),
        ("warm", one_warm, eight_warm, busy_warm),
        ("bare procs", one_bare, eight_bare, None),
    ):
        if busy is None:
            cpu = "(no sandbox: the tool's command as plain processes, the floor of these cores)"
        else:
            cpu = f"{min(busy, 1.0):.0%}" if eight >= 0.05 else "n/a (window under the 10 ms tick)"
        print(f"{mode:<12} {one * 1000:>9.1f} {eight * 1000:>10.1f} {eight / one:>6.2f}  {cpu}")
    print(f"burst of 64: {burst_ok}/64 succeeded in {burst_wall * 1000:.0f} ms, at most {burst_most} at once")
    for shape, times in rebuild.items() if isinstance(rebuild, dict) else ():
        firsts, rebuilds = (", ".join(f"{seconds:.1f}" for seconds in series) for series in times)
        print(f"`pip install .` tools with pydantic, {shape}: first builds {firsts} s, after a code edit {rebuilds} s")
    print()

    p50 = {mode: s[0] for mode, s in stats.items()}
    p95 = {mode: s[1] for mode, s in stats.items()}
    table = Table()
    ratio = p50["default"] / p50["docker-run"]
    table.add("default p50 / docker-run p50", f"{ratio:.3f}", "<= 0.05", ratio <= 0.05)
    spread = p95["default"] / p50["default"]
    table.add("default p95 / default p50", f"{spread:.2f}", "<= 1.5", spread <= 1.5)
    noise = p95["docker-run"] / p50["docker-run"]
    table.add("docker-run p95 / p50 (the machine's own spread)", f"{noise:.2f}", "(info)", None)
    b2b = p50["default b2b"] / p50["docker-run"]
    table.add("default back to back p50 / docker-run p50", f"{b2b:.3f}", "(info)", None)
    ratio8 = eight_default / eight_bare
    table.add("8 concurrent, default / bare processes", f"{ratio8:.2f}", "<= 1.1", ratio8 <= 1.1)
    fine = burst_ok == 64 and burst_most <= burst_cap
    table.add(f"burst of 64: ok, most at once (cap {burst_cap})", f"{burst_ok},{burst_most}", f"64,<={burst_cap}", fine)
    if "hyperpocket" in p50:
        speedup = p50["hyperpocket"] / p50["default"]
        table.add("hyperpocket p50 / default p50", f"{speedup:.1f}", ">= 20", speedup >= 20)
    else:
        table.add("hyperpocket p50 / default p50", "-", ">= 20", None)
        print(f"hyperpocket: not measured: {notes['hyperpocket']}")
    table.add(f"warm p50 (ms), calls {args.pause:g} s apart", f"{p50['warm']:.2f}", "< 1", p50["warm"] < 1)
    table.add("warm p50 (ms), back to back", f"{p50['warm b2b']:.2f}", "< 1", p50["warm b2b"] < 1)
    floor = p50["channel echo"]
    table.add("  of which the channel's round trip (ms)", f"{floor:.2f}", "(info)", None)
    table.add("  the engine's attach round trip, for comparison (ms)", f"{p50['attach echo']:.2f}", "(info)", None)
    for shape in REBUILD_SHAPES:
        what = f"rebuild after a code edit / first build, {shape} (medians of {REBUILDS})"
        if isinstance(rebuild, dict):
            share = statistics.median(rebuild[shape][1]) / statistics.median(rebuild[shape][0])
            table.add(what, f"{share:.2f}", "<= 0.3", share <= 0.3)
        else:
            table.add(what, "-", "<= 0.3", None)
    if not isinstance(rebuild, dict):
        print(f"rebuild: not measured: {rebuild}")
    if one_shot is not None:
        cli, imported = one_shot
        table.add("one-shot `pocket invoke` / `docker run` (medians of 10)", f"{cli:.2f}", "<= 1.0", cli <= 1.0)
        table.add("`from runner import Pocket` (s, best of 20)", f"{imported:.3f}", "< 0.1", imported < 0.1)
    else:
        table.add("one-shot `pocket invoke` / `docker run`", "-", "<= 1.0", None)
    for mode, against in (("gvisor", "default"), ("gvisor-warm", "warm")):
        if mode in p50:
            gvisor = p50[mode] / p50[against]
            table.add(f"{mode} p50 / {against} p50 (what gVisor adds)", f"{gvisor:.2f}", "(info)", None)
    if kubernetes is not None:
        docker_p50, kube_p50 = kubernetes["docker"]["p50"], kubernetes["kubernetes"]["p50"]
        table.add("kubernetes p50 / docker p50 (stand-in API server, pool of 1)", f"{kube_p50 / docker_p50:.2f}",
                  "(info)", None)  # fmt: skip
        grown = kubernetes["kubernetes"]["burst_wall"] / kubernetes["docker"]["burst_wall"]
        table.add("kubernetes / docker, 32 concurrent calls (wall)", f"{grown:.2f}", "(info)", None)
    table.print()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
