"""What the audit log and tracing add to a default-mode sandboxed call (tools-example/hello), at p50.

    .venv/bin/python benchmarks/bench_audit.py [--calls 100] [--pause 0.5]

Two worker processes, each with its own Pocket (same settings, its own pool of started containers): "on"
writes an audit record per call and exports its spans over OTLP/HTTP (the SDK's batch processor) to a receiver
in this process; "off" has `[audit] enabled = false` and no OpenTelemetry SDK (the API's no-op spans). Calls
are interleaved, one "on" then one "off", so both see the same machine load; each worker times its own call
(Pocket.invoke, start to return). A pause after each pair lets both pools refill, so calls measure the
default path (a started container waiting) rather than container starts. Prints p50 and p95 of each and the
p50 ratio against the < 5 % target.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "tools-example" / "hello"
TARGET = 0.05

WORKER = """
import sys, time
sys.path.insert(0, {root!r})
from runner.pocket import Pocket
from runner.settings import Settings

settings = Settings(cache_dir={cache!r}, data_dir={data!r}, audit={{"enabled": {audit}}})
with Pocket([{hello!r}], settings=settings) as pocket:
    pocket.prepare("hello")
    print("ready", flush=True)
    for line in sys.stdin:
        started = time.perf_counter()
        result = pocket.invoke("hello", {{"name": "Ada"}})
        elapsed = time.perf_counter() - started
        assert result.ok, result
        print(elapsed, flush=True)
"""


class Receiver(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that takes export requests and counts their bytes."""

    received = 0

    def do_POST(self) -> None:
        Receiver.received += len(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def worker(on: bool, folder: Path, endpoint: str) -> subprocess.Popen[str]:
    data = folder / ("data-on" if on else "data-off")
    script = WORKER.format(root=str(ROOT), cache=str(folder / "cache"), data=str(data), audit=on, hello=str(HELLO))
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "POCKET_"))}
    if on:
        environment.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SERVICE_NAME="bench-audit")
    process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env=environment, cwd=ROOT)  # fmt: skip
    assert process.stdout is not None and process.stdout.readline().strip() == "ready", "the worker did not start"
    return process


def call(process: subprocess.Popen[str]) -> float:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("call\n")
    process.stdin.flush()
    return float(process.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100, help="calls per side (default: %(default)s)")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds after each pair (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="calls per side not counted (default: %(default)s)")
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as folder:
        on, off = worker(True, Path(folder), endpoint), worker(False, Path(folder), endpoint)
        samples: dict[str, list[float]] = {"on": [], "off": []}
        try:
            for n in range(args.warmup + args.calls):
                first, second = (("on", on), ("off", off)) if n % 2 == 0 else (("off", off), ("on", on))
                for name, process in (first, second):  # alternate which goes first, too
                    elapsed = call(process)
                    if n >= args.warmup:
                        samples[name].append(elapsed)
                time.sleep(args.pause)
        finally:
            for process in (on, off):
                assert process.stdin is not None
                process.stdin.close()
                process.wait(60)
    p50 = {name: statistics.median(values) for name, values in samples.items()}
    ratio = p50["on"] / p50["off"] - 1
    print(f"default-mode call of tools-example/hello, {args.calls} calls per side, interleaved")
    print(f"{'':24}{'p50 ms':>10}{'p95 ms':>10}")
    for name, label in (("off", "audit + tracing off"), ("on", "audit + tracing on")):
        print(f"{label:24}{p50[name] * 1000:10.2f}{pct(samples[name], 0.95) * 1000:10.2f}")
    # Load from elsewhere drifts over a run; the two calls of a pair see about the same: their difference is the
    # steadier estimate of what the audit log and tracing add.
    paired = statistics.median(a - b for a, b in zip(samples["on"], samples["off"], strict=True))
    print(f"OTLP bytes received: {Receiver.received}; median added time per pair: {paired * 1000:.2f} ms")
    verdict = "met" if ratio < TARGET else "missed"
    print(json.dumps({"overhead_p50": round(ratio, 4), "paired_overhead": round(paired / p50["off"], 4),
                      "target": f"< {TARGET:.0%}", "verdict": verdict}))  # fmt: skip
    server.shutdown()


if __name__ == "__main__":
    main()
