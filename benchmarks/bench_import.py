"""Import time: `import runner`, `from runner import Pocket` and what `pocket invoke` imports before it hands
its call to the local pocket process, against `import hyperpocket`, in one run.

    python benchmarks/bench_import.py [--runs 20]

Each import runs in a fresh interpreter (bytecode already cached, as a user's second run); the bare
interpreter start is measured too and subtracted, so the figures are the imports themselves. Wall-clock and
CPU time (user + system) are both printed: on a loaded machine the CPU time is the steadier one.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_function_tool import hyperpocket_python

# What `pocket invoke` imports when a local pocket process serves it (the console script imports re itself).
CLIENT = "import re, runner.cli, runner.daemon.client"
TARGETS = {"import runner": 0.3, "from runner import Pocket": 0.1}  # seconds, at most


def median_seconds(python: Path, code: str, runs: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of a fresh interpreter running `code`."""
    with tempfile.TemporaryDirectory() as scratch:  # hyperpocket writes .log/ into its working directory
        subprocess.run([python, "-c", code], check=True, cwd=scratch, capture_output=True)  # warm the caches
        walls, cpus = [], []
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run([python, "-c", code], check=True, cwd=scratch, capture_output=True)
            walls.append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-hyperpocket", action="store_true", help="skip hyperpocket (installed on first use)")
    args = parser.parse_args()
    ours = Path(sys.executable)
    cases = {
        "import runner": (ours, "import runner"),
        "from runner import Pocket": (ours, "from runner import Pocket"),
        "pocket invoke, before handing the call over": (ours, CLIENT),
    }
    if not args.no_hyperpocket:
        cases["import hyperpocket 0.5.7"] = (hyperpocket_python(), "import hyperpocket")
    base = {python: median_seconds(python, "pass", args.runs) for python, _ in cases.values()}
    print(f"\nimport time, median of {args.runs} fresh interpreters, interpreter start subtracted\n")
    print("| import | wall ms | CPU ms | target |")
    print("|---|---|---|---|")
    met = True
    results = {}
    for name, (python, code) in cases.items():
        wall, cpu = median_seconds(python, code, args.runs)
        results[name] = wall - base[python][0]
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            verdict = f"under {target:g} s: {'met' if results[name] < target else 'missed'}"
            met = met and results[name] < target
        print(f"| {name} | {results[name] * 1e3:.1f} | {(cpu - base[python][1]) * 1e3:.1f} | {verdict} |")
    if "import hyperpocket 0.5.7" in results:
        ratio = results["import runner"] / results["import hyperpocket 0.5.7"]
        print(f"\nratio import runner / import hyperpocket: {ratio:.3f}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
