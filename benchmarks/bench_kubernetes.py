"""Side by side, in one run, on tools-example/hello: a call through the Kubernetes backend (on the stand-in API
server of tests/kube_standin, whose Pods are containers on the local Docker engine) against the Docker backend.

    .venv/bin/python benchmarks/bench_kubernetes.py [--calls 30] [--concurrent 32]

For each backend: N sequential calls from a pool of one (p50, p95), then a burst of C concurrent calls after
one burst to grow the pools (wall time, and p50 / p95 of the calls in it). Prints the table and the ratios
Kubernetes / Docker. The stand-in adds what a real API server adds in kind (HTTP, a watch, a websocket per
call) but no scheduler or kubelet latency: on a real cluster a Pod's start takes longer, which the pool hides
as long as calls do not outrun it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HELLO = ROOT / "tools-example" / "hello"
BODY = {"name": "Ada"}


def pct(values: list[float], p: float) -> float:
    """The p-quantile, interpolated between the samples (as bench_sandbox.py computes it)."""
    return statistics.quantiles(values, n=100, method="inclusive")[round(p * 100) - 1]


def one_call(box: Any, manifest: Any) -> float:
    started = time.perf_counter()
    result = box.run(manifest, BODY, {})
    assert result.ok and result.value == {"greeting": "Hello, Ada!"}, result
    return time.perf_counter() - started


def wait_for_pool(box: Any, size: int) -> None:
    (pool,) = box._pools.of_tool("hello")
    deadline = time.monotonic() + 300
    while len(pool.idle) < size and time.monotonic() < deadline:
        time.sleep(0.05)


def measure(settings: Any, calls: int, burst_size: int) -> dict[str, float]:
    from runner.manifest import load_manifest
    from runner.sandbox import Sandbox

    manifest = load_manifest(HELLO)
    with Sandbox(settings) as box:
        box.prepare(manifest)
        wait_for_pool(box, 1)
        one_call(box, manifest)  # the first call pays for nothing the others do not
        sequential = []
        for _ in range(calls):
            wait_for_pool(box, 1)  # each call finds its Pod (container) started, as a paced agent's does
            sequential.append(one_call(box, manifest))
        with ThreadPoolExecutor(burst_size) as threads:
            list(threads.map(lambda _: one_call(box, manifest), range(burst_size)))  # grows the pool
            wait_for_pool(box, burst_size)
            started = time.perf_counter()
            burst = list(threads.map(lambda _: one_call(box, manifest), range(burst_size)))
            wall = time.perf_counter() - started
    return {"p50": pct(sequential, 0.5), "p95": pct(sequential, 0.95), "burst_wall": wall,
            "burst_p50": pct(burst, 0.5), "burst_p95": pct(burst, 0.95)}  # fmt: skip


def compare(calls: int, concurrent: int) -> dict[str, dict[str, float]]:
    """`measure` of the Docker backend and of the Kubernetes one (on the stand-in), by backend."""
    import docker

    from runner.settings import KubernetesSettings, SandboxSettings
    from tests.kube_standin import KubeStandin, Registry

    common = {"pool_size": 1, "pool_max": concurrent, "max_concurrent": concurrent}
    folder = Path(tempfile.mkdtemp(prefix="bench-kubernetes-"))
    registry = Registry(folder).start()
    standin = KubeStandin(docker.APIClient(version="auto", max_pool_size=64), folder).start()
    try:
        kubernetes = SandboxSettings(
            backend="kubernetes", registry=registry.address,
            kubernetes=KubernetesSettings(namespace=standin.namespace, kubeconfig=standin.kubeconfig), **common,
        )  # fmt: skip
        return {
            "docker": measure(SandboxSettings(**common), calls, concurrent),
            "kubernetes": measure(kubernetes, calls, concurrent),
        }
    finally:
        standin.stop()
        registry.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=32)
    args = parser.parse_args()
    results = compare(args.calls, args.concurrent)
    print(f"\n{args.calls} sequential calls (pool of 1), then {args.concurrent} concurrent (pool grown), seconds:")
    print(f"{'backend':<12}{'p50':>9}{'p95':>9}{'burst wall':>12}{'burst p50':>11}{'burst p95':>11}")
    for name, r in results.items():
        print(f"{name:<12}{r['p50']:>9.3f}{r['p95']:>9.3f}{r['burst_wall']:>12.3f}{r['burst_p50']:>11.3f}"
              f"{r['burst_p95']:>11.3f}")  # fmt: skip
    docker_r, kube_r = results["docker"], results["kubernetes"]
    print("\nKubernetes / Docker: " + ", ".join(f"{key} {kube_r[key] / docker_r[key]:.2f}x" for key in docker_r))


if __name__ == "__main__":
    main()
