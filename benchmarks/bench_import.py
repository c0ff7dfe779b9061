"""Import time: `import runner`, `from runner import Pocket` and what `pocket invoke` imports before it hands
its call to the local pocket process, against `import hyperpocket`, in one run.

    python benchmarks/bench_import.py [--runs 20] [--baseline OTHER_CHECKOUT/.venv/bin/python]

Each import runs in a fresh interpreter (bytecode already cached, as a user's second run); the bare
interpreter start is measured too and subtracted, so the figures are the imports themselves. The median and
the best wall-clock time are printed, and the median CPU time (user + system); the targets are judged on the
best time, since a loaded machine only ever adds to an import's time (as `timeit` advises). With
--baseline, the same imports by another checkout's interpreter (main's, say) are measured in the same run, and
the ratios printed.
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


def median_seconds(python: Path, code: str, runs: int) -> tuple[float, float, float]:
    """Median and best wall-clock seconds, and median CPU seconds, of a fresh interpreter running `code`."""
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
    return statistics.median(walls), min(walls), statistics.median(cpus)


def pocket_import_seconds(runs: int) -> float:
    """The best time of `from runner import Pocket` in a fresh interpreter, its start subtracted (the target's)."""
    python = Path(sys.executable)
    return median_seconds(python, "from runner import Pocket", runs)[1] - median_seconds(python, "pass", runs)[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-hyperpocket", action="store_true", help="skip hyperpocket (installed on first use)")
    parser.add_argument("--baseline", type=Path, metavar="PYTHON", help="another checkout's interpreter to compare")
    args = parser.parse_args()
    ours = Path(sys.executable)
    cases = {
        "import runner": (ours, "import runner"),
        "from runner import Pocket": (ours, "from runner import Pocket"),
        "pocket invoke, before handing the call over": (ours, CLIENT),
    }
    if args.baseline:
        cases["baseline: from runner import Pocket"] = (args.baseline, "from runner import Pocket")
    if not args.no_hyperpocket:
        cases["import hyperpocket 0.5.7"] = (hyperpocket_python(), "import hyperpocket")
    base = {python: median_seconds(python, "pass", args.runs) for python, _ in cases.values()}
    print(f"\nimport time, median of {args.runs} fresh interpreters, interpreter start subtracted\n")
    print("| import | wall ms (median) | wall ms (best) | CPU ms (median) | target |")
    print("|---|---|---|---|---|")
    met = True
    results = {}
    for name, (python, code) in cases.items():
        wall, best, cpu = (a - b for a, b in zip(median_seconds(python, code, args.runs), base[python], strict=True))
        results[name] = wall
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            verdict = f"under {target:g} s: {'met' if best < target else 'missed'}"
            met = met and best < target
        print(f"| {name} | {wall * 1e3:.1f} | {best * 1e3:.1f} | {cpu * 1e3:.1f} | {verdict} |")
    if args.baseline:
        ratio = results["from runner import Pocket"] / results["baseline: from runner import Pocket"]
        print(f"\nratio from runner import Pocket / the baseline's: {ratio:.3f}")
    if "import hyperpocket 0.5.7" in results:
        ratio = results["import runner"] / results["import hyperpocket 0.5.7"]
        print(f"\nratio import runner / import hyperpocket: {ratio:.3f}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
