"""One-shot `pocket invoke` against plain `docker run` of the same tool image and command, in one run.

    .venv/bin/python benchmarks/bench_cli.py [--runs 10]

Each sample is a fresh process, as a person or a script runs it; the modes are interleaved (one of each per
round) so the machine's load falls on all of them alike:
  docker-run      `docker run --rm -i --network none IMAGE /bin/sh -c RUN` (the baseline)
  pocket invoke   `pocket invoke tools-example/hello hello --body ...`, served by the local pocket process
                  (started by a first command before the rounds, as a person's earlier command would have)
  --no-daemon     the same command running the call itself (importing the runner in every process)
Also the first command of all (no local process yet: it runs the call itself and starts one) and the CPU time
the `pocket` process spends. Prints medians, ratios to docker-run, and the target (met / missed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HELLO = ROOT / "tools-example" / "hello"
BODY = json.dumps({"name": "Ada"})
EXPECTED = {"greeting": "Hello, Ada!"}
POCKET = str(Path(sys.executable).parent / "pocket")
TARGET = 1.0  # pocket invoke / docker run, at most


def timed(command: list[str], stdin: str | None, env: dict[str, str], cwd: str) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system) of one process, which must print the tool's greeting."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or json.loads(done.stdout) != EXPECTED:
        raise SystemExit(f"{command[0]} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def tool_command() -> tuple[str, str]:
    """The hello tool's image (built if needed) and its `entrypoint.run`."""
    from runner.manifest import load_manifest
    from runner.sandbox import Sandbox
    from runner.settings import load_settings

    manifest = load_manifest(HELLO)
    with Sandbox(load_settings()) as sandbox:
        return sandbox.image(manifest), manifest.entrypoint.run


def daemon_pids(runtime: Path) -> list[int]:
    return [int(lock.read_text() or 0) for lock in (runtime / "pocket-runner").glob("*.lock") if lock.read_text()]


def wait_for_socket(runtime: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not list((runtime / "pocket-runner").glob("*.sock")):
        if time.monotonic() > deadline:
            raise SystemExit("the local pocket process did not start")
        time.sleep(0.05)


Samples = dict[str, list[tuple[float, float]]]


def measure(runs: int) -> tuple[Samples, tuple[float, float]]:
    """(wall, CPU) seconds of each mode's processes over `runs` interleaved rounds, and of the first command."""
    image, run = tool_command()
    docker = ["docker", "run", "--rm", "-i", "--network", "none", image, "/bin/sh", "-c", run]
    invoke = [POCKET, "invoke", str(HELLO), "hello", "--body", BODY]
    with tempfile.TemporaryDirectory(prefix="pb-") as scratch:
        runtime = Path(scratch) / "run"
        runtime.mkdir(mode=0o700)
        # The command's own folder (no settings.toml), and a runtime folder of its own for the local process.
        env = {k: v for k, v in os.environ.items() if not k.startswith("POCKET_")} | {"XDG_RUNTIME_DIR": str(runtime)}
        try:
            timed(docker, BODY, env, scratch)  # the engine's caches, as every mode gets
            first = timed(invoke, None, env, scratch)
            wait_for_socket(runtime)
            timed(invoke, None, env, scratch)  # the process loads the tool and starts its pool
            samples: Samples = {"docker-run": [], "pocket invoke": [], "--no-daemon": []}
            for _ in range(runs):
                samples["docker-run"].append(timed(docker, BODY, env, scratch))
                samples["pocket invoke"].append(timed(invoke, None, env, scratch))
                samples["--no-daemon"].append(timed([*invoke, "--no-daemon"], None, env, scratch))
        finally:
            for pid in daemon_pids(runtime):
                stop(pid)
    return samples, first


def median_wall(values: list[tuple[float, float]]) -> float:
    """The median wall time of (wall, CPU) samples."""
    return statistics.median(wall for wall, _ in values)


def ratio(samples: Samples) -> float:
    """The target's ratio: median `pocket invoke` over median `docker run`."""
    return median_wall(samples["pocket invoke"]) / median_wall(samples["docker-run"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    samples, first = measure(args.runs)
    base = median_wall(samples["docker-run"])
    print(f"\none-shot commands, median of {args.runs} processes each, interleaved (tools-example/hello)\n")
    print("| command | p50 ms | CPU ms (process) | / docker run |")
    print("|---|---|---|---|")
    for name, values in samples.items():
        wall = median_wall(values)
        cpu = statistics.median(c for _, c in values)
        print(f"| {name} | {wall * 1e3:.0f} | {cpu * 1e3:.0f} | {wall / base:.2f} x |")
    print(f"| first command (no local process yet) | {first[0] * 1e3:.0f} | {first[1] * 1e3:.0f} | "
          f"{first[0] / base:.2f} x |")  # fmt: skip
    measured = ratio(samples)
    met = measured <= TARGET
    print(f"\ntarget: pocket invoke at most {TARGET:g} x docker run: {measured:.2f} x, {'met' if met else 'missed'}")
    return 0 if met else 1


def stop(pid: int) -> None:
    """End the local process this run started (SIGTERM: it removes its containers), and wait for it."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    raise SystemExit(main())
