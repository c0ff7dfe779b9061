"""What the audit log and tracing add to a default-mode sandboxed call (tools-example/hello), at p50.

    .venv/bin/python benchmarks/bench_audit.py [--calls 200] [--pause 0.5]

One Pocket, one pool of started containers, calls alternating between "on" and "off" (which goes first
alternates too), so both see the same machine, the same containers and the same load:
  on   an audit record per call, and every span recorded by the OpenTelemetry SDK and exported over OTLP/HTTP
       (batch processor) to a receiver in this process
  off  `[audit] enabled = false`, and the SDK's sampler drops every span (non-recording spans, as the API's
       no-op gives without an SDK)
Two processes (one per side) were tried first: on this shared 2-core machine two identical "off" processes
already differ by up to 8 % at p50, more than what is measured here. A pause after each pair lets the pool
refill, so calls measure the default path (a started container waiting). Prints p50 and p95 of each side, the
p50 ratio against the < 5 % target, and the per-pair difference (the median for each order, averaged).
"""

from __future__ import annotations

import argparse
import http.server
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HELLO = ROOT / "tools-example" / "hello"
TARGET = 0.05


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


def switched_tracing(endpoint: str) -> list[bool]:
    """The SDK exporting over OTLP/HTTP, with a sampler that records spans only while the returned flag is set."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler

    flag = [False]

    class Switch(Sampler):
        def should_sample(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return (ALWAYS_ON if flag[0] else ALWAYS_OFF).should_sample(*args, **kwargs)

        def get_description(self) -> str:
            return "switch"

    provider = TracerProvider(sampler=Switch(), resource=Resource.create({"service.name": "bench-audit"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    trace.set_tracer_provider(provider)
    return flag


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="calls per side (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="calls per side not counted (default: %(default)s)")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds after each pair (default: %(default)s)")
    args = parser.parse_args()
    from runner.audit import audit_log
    from runner.pocket import Pocket
    from runner.settings import Settings

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tracing = switched_tracing(f"http://127.0.0.1:{server.server_address[1]}")
    samples: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as folder:
        base = {"cache_dir": Path(folder) / "cache", "data_dir": Path(folder) / "data"}
        settings = {side: Settings(**base, audit={"enabled": side == "on"}) for side in samples}
        with Pocket([HELLO], settings=settings["off"]) as pocket:
            pocket.prepare("hello")
            for n in range(args.warmup + args.calls):
                for side in ("on", "off") if n % 2 == 0 else ("off", "on"):
                    pocket.settings = settings[side]  # read per call: whether this call writes an audit record
                    tracing[0] = side == "on"
                    started = time.perf_counter()
                    result = pocket.invoke("hello", {"name": "Ada"})
                    elapsed = time.perf_counter() - started
                    assert result.ok, result
                    if n >= args.warmup:
                        samples[side].append(elapsed)
                time.sleep(args.pause)
        # closed: the audit writer has written what it queued; every "on" call has its record, no "off" call one
        written = len(audit_log(settings["on"]).read(limit=10 * (args.warmup + args.calls)))
    assert written == args.warmup + args.calls, f"{written} audit records for {args.warmup + args.calls} calls"
    from opentelemetry import trace

    trace.get_tracer_provider().shutdown()  # type: ignore[attr-defined] - exports what is left
    p50 = {side: statistics.median(values) for side, values in samples.items()}
    ratio = p50["on"] / p50["off"] - 1
    # Per pair, on minus off; the call that goes first after the pause pays for waking up, so the two orders are
    # taken apart (pairs alternate) and their medians averaged.
    differences = [a - b for a, b in zip(samples["on"], samples["off"], strict=True)]
    paired = (statistics.median(differences[0::2]) + statistics.median(differences[1::2])) / 2
    print(f"default-mode call of tools-example/hello, {args.calls} calls per side, interleaved in one Pocket")
    print(f"{'':24}{'p50 ms':>10}{'p95 ms':>10}")
    for side, label in (("off", "audit + tracing off"), ("on", "audit + tracing on")):
        print(f"{label:24}{p50[side] * 1000:10.2f}{pct(samples[side], 0.95) * 1000:10.2f}")
    print(f"OTLP bytes received: {Receiver.received}; audit records written: {written}; "
          f"median added time per pair: {paired * 1000:.2f} ms")  # fmt: skip
    verdict = "met" if ratio < TARGET else "missed"
    print(json.dumps({"overhead_p50": round(ratio, 4), "paired_overhead": round(paired / p50["off"], 4),
                      "target": f"< {TARGET:.0%}", "verdict": verdict}))  # fmt: skip
    server.shutdown()


if __name__ == "__main__":
    main()
