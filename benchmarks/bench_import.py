"""Import time: `import runner` and `from runner import Pocket` against `import hyperpocket`, in one run.

    python benchmarks/bench_import.py [--runs 20]

Each import runs in a fresh interpreter (bytecode already cached, as a user's second run); the bare
interpreter start is measured too and subtracted, so the figures are the imports themselves.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_function_tool import hyperpocket_python


def median_seconds(python: Path, code: str, runs: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:  # hyperpocket writes .log/ into its working directory
        subprocess.run([python, "-c", code], check=True, cwd=scratch, capture_output=True)  # warm the caches
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([python, "-c", code], check=True, cwd=scratch, capture_output=True)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    ours, theirs = Path(sys.executable), hyperpocket_python()
    cases = {
        "import runner": (ours, "import runner"),
        "from runner import Pocket": (ours, "from runner import Pocket"),
        "import hyperpocket 0.5.7": (theirs, "import hyperpocket"),
    }
    base = {python: median_seconds(python, "pass", args.runs) for python in {ours, theirs}}
    print(f"\nimport time, median of {args.runs} fresh interpreters, interpreter start subtracted\n")
    print("| import | ms |")
    print("|---|---|")
    results = {}
    for name, (python, code) in cases.items():
        results[name] = median_seconds(python, code, args.runs) - base[python]
        print(f"| {name} | {results[name] * 1e3:.1f} |")
    ratio = results["import runner"] / results["import hyperpocket 0.5.7"]
    print(f"\nratio import runner / import hyperpocket: {ratio:.3f}")
    target = results["import runner"] < 0.3
    print(f"target (import runner under 0.3 s): {'met' if target else 'NOT met'}")
    return 0 if target else 1


if __name__ == "__main__":
    raise SystemExit(main())
