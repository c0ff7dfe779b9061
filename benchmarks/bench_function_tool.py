"""Function-tool invoke overhead: pocket-runner against hyperpocket 0.5.7, side by side in one run.

    python benchmarks/bench_function_tool.py [--calls 2000] [--rounds 3]

Both sides call the same trivial function (`add(a: int, b: int)`) through their own `Pocket.invoke`,
so what is measured is the runner's overhead: lookup, body validation, binding, the call, the result.
Each side runs in its own process (hyperpocket in its own venv, `benchmarks/.venv-hyperpocket`,
created with `hyperpocket==0.5.7` when missing); the rounds alternate between the two so that machine
noise hits both alike. Prints p50 and p95 per call, and the ratio pocket-runner / hyperpocket.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HYPERPOCKET_VENV = HERE / ".venv-hyperpocket"
HYPERPOCKET_VERSION = "0.5.7"

WORKERS = {
    "pocket-runner": """
        import json, sys, time
        sys.path.insert(0, {repo!r})
        from runner import Pocket, function_tool

        @function_tool
        def add(a: int, b: int) -> int:
            '''Add two integers.'''
            return a + b

        pocket = Pocket(tools=[add])
        body = {{"a": 1, "b": 2}}
        for _ in range({warmup}):
            assert pocket.invoke("add", body).value == 3
        times = []
        for _ in range({calls}):
            started = time.perf_counter()
            pocket.invoke("add", body)
            times.append(time.perf_counter() - started)
        pocket.close()
        print(json.dumps(times))
    """,
    "hyperpocket 0.5.7": """
        import json, logging, sys, time
        logging.disable(logging.CRITICAL)
        from hyperpocket import Pocket
        from hyperpocket.tool import function_tool

        @function_tool
        def add(a: int, b: int) -> int:
            '''Add two integers.'''
            return a + b

        pocket = Pocket(tools=[add])
        body = {{"a": 1, "b": 2}}
        try:
            for _ in range({warmup}):
                assert pocket.invoke("add", body) == "3"
            times = []
            for _ in range({calls}):
                started = time.perf_counter()
                pocket.invoke("add", body)
                times.append(time.perf_counter() - started)
        finally:
            pocket.teardown()
        print(json.dumps(times))
        sys.stdout.flush()
        import os
        os._exit(0)  # hyperpocket's server process may otherwise keep the interpreter alive
    """,
}


def hyperpocket_python() -> Path:
    """The hyperpocket venv's interpreter, creating the venv on first use."""
    python = HYPERPOCKET_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {HYPERPOCKET_VENV} with hyperpocket=={HYPERPOCKET_VERSION} ...", file=sys.stderr, flush=True)
        venv.create(HYPERPOCKET_VENV, with_pip=True)
    with tempfile.TemporaryDirectory() as scratch:  # importing hyperpocket creates .log/ in the working directory
        check = subprocess.run([python, "-c", "import hyperpocket.tool"], capture_output=True, cwd=scratch)
    if check.returncode != 0:
        subprocess.run(
            [python, "-m", "pip", "install", "-q", f"hyperpocket=={HYPERPOCKET_VERSION}"],
            check=True,
        )
    return python


def run_worker(name: str, python: Path, calls: int, warmup: int) -> list[float]:
    code = textwrap.dedent(WORKERS[name]).format(repo=str(REPO), calls=calls, warmup=warmup)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory() as scratch:  # hyperpocket writes .log/ into its working directory
        result = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, cwd=scratch, env=env, timeout=600, check=False
        )
    if result.returncode != 0:
        raise SystemExit(f"{name} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per side per round")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls first")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating which side goes first")
    args = parser.parse_args()

    pythons = {"pocket-runner": Path(sys.executable), "hyperpocket 0.5.7": hyperpocket_python()}
    times: dict[str, list[float]] = {name: [] for name in pythons}
    order = list(pythons)
    for round_number in range(args.rounds):
        for name in order if round_number % 2 == 0 else reversed(order):
            times[name] += run_worker(name, pythons[name], args.calls, args.warmup)
            print(f"round {round_number + 1}: {name} done", file=sys.stderr, flush=True)

    rows = {
        name: (percentile(values, 0.5) * 1e3, percentile(values, 0.95) * 1e3, statistics.fmean(values) * 1e3)
        for name, values in times.items()
    }
    print(f"\nfunction tool invoke, {args.rounds} x {args.calls} calls per side (Python {sys.version.split()[0]})\n")
    print("| runner | p50 (ms) | p95 (ms) | mean (ms) |")
    print("|---|---|---|---|")
    for name, (p50, p95, mean) in rows.items():
        print(f"| {name} | {p50:.4f} | {p95:.4f} | {mean:.4f} |")
    ours, theirs = rows["pocket-runner"], rows["hyperpocket 0.5.7"]
    print(f"\nratio pocket-runner / hyperpocket: p50 {ours[0] / theirs[0]:.3f}, p95 {ours[1] / theirs[1]:.3f}")
    target = ours[0] <= theirs[0] / 2
    print(f"target (p50 at most half of hyperpocket's): {'met' if target else 'NOT met'}")
    return 0 if target else 1


if __name__ == "__main__":
    raise SystemExit(main())
