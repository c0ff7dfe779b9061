"""What an authenticated MCP call over HTTP adds to an in-process `invoke`, side by side in one run.

    python benchmarks/bench_mcp_http.py [--calls 300] [--rounds 3]

Three ways to call the same trivial function tool (`add(a, b)`):
- in-process: `await pocket.ainvoke("add", body)`;
- HTTP, no auth: the official MCP SDK client calling `pocket serve --http --no-auth` on loopback;
- HTTP, authenticated: the same against a server that checks a JWT access token on every request (signature
  by the issuer's JWKS, `iss`, `aud`, `exp`, scope), from the tests' oidc-provider (tests/oidc, whose node
  modules scripts/setup-test-deps.sh installs).
The servers run in their own processes; the rounds alternate between the three so that machine noise hits
each alike. Prints p50 and p95 per call for each, and what HTTP and authentication add at p50 and p95.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import anyio  # noqa: E402
import httpx2  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from runner import Pocket, function_tool  # noqa: E402
from tests.fixtures_oauth import OidcServer  # noqa: E402
from tests.helpers import environment, free_port, wait_listening  # noqa: E402
from tests.test_mcp_auth import MCP_CLIENT, MCP_REDIRECT, access_token  # noqa: E402

SERVER = """
import sys
sys.path.insert(0, {repo!r})
from runner import Pocket, function_tool
from runner.server import serve
from runner.settings import load_settings

@function_tool
def add(a: int, b: int) -> int:
    '''Add two integers.'''
    return a + b

user = None if sys.argv[3] == "auth" else "default"
serve(Pocket([add], settings=load_settings(sys.argv[1])), transport="http", port=int(sys.argv[2]), user_id=user)
"""


@function_tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def start_server(folder: Path, issuer: str | None) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    settings = folder / f"settings-{port}.toml"
    server = f'[server]\nissuers = ["{issuer}"]\nrequired_scopes = ["mcp:tools"]\n' if issuer else ""
    settings.write_text(f'data_dir = "{folder / "data"}"\ncache_dir = "{folder / "cache"}"\n{server}')
    script = folder / "server.py"
    script.write_text(textwrap.dedent(SERVER.format(repo=str(REPO))))
    mode = "auth" if issuer else "none"
    command = [sys.executable, str(script), str(settings), str(port), mode]
    process = subprocess.Popen(command, env=environment(), stderr=subprocess.PIPE, text=True)
    if not wait_listening(port, process, timeout=30):
        raise SystemExit(f"the server did not start: {process.stderr.read() if process.stderr else ''}")
    return process, f"http://127.0.0.1:{port}/mcp"


async def http_round(url: str, token: str | None, calls: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60))
    async with Client(streamable_http_client(url, http_client=http)) as client:
        for _ in range(20):
            await client.call_tool("add", {"a": 1, "b": 2})
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            result = await client.call_tool("add", {"a": 1, "b": 2})
            times.append(time.perf_counter() - started)
            assert not result.is_error, result
    return times


async def invoke_round(pocket: Pocket, calls: int) -> list[float]:
    for _ in range(20):
        await pocket.ainvoke("add", {"a": 1, "b": 2})
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await pocket.ainvoke("add", {"a": 1, "b": 2})
        times.append(time.perf_counter() - started)
    return times


def percentile(values: list[float], fraction: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(fraction * 100) - 1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per side per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-mcp-http-"))
    clients = [{"client_id": MCP_CLIENT, "redirect_uris": [MCP_REDIRECT], "token_endpoint_auth_method": "none"}]
    idp = OidcServer(clients, 3600, RESOURCE_TTL="3600")
    servers: list[subprocess.Popen[str]] = []
    try:
        plain, plain_url = start_server(folder, None)
        authenticated, auth_url = start_server(folder, idp.issuer)
        servers += [plain, authenticated]
        token = access_token(idp, "bench", resource=auth_url)
        times: dict[str, list[float]] = {"in-process invoke": [], "HTTP, no auth": [], "HTTP, JWT checked": []}
        with Pocket([add]) as pocket:
            for _ in range(args.rounds):
                times["in-process invoke"] += anyio.run(invoke_round, pocket, args.calls)
                times["HTTP, no auth"] += anyio.run(http_round, plain_url, None, args.calls)
                times["HTTP, JWT checked"] += anyio.run(http_round, auth_url, token, args.calls)
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
        idp.stop()
    report(times, args)


def report(times: dict[str, list[float]], args: Any) -> None:
    print(f"{args.rounds} rounds x {args.calls} calls per side (ms per call)")
    p50 = {name: percentile(values, 0.50) * 1000 for name, values in times.items()}
    p95 = {name: percentile(values, 0.95) * 1000 for name, values in times.items()}
    for name in times:
        print(f"  {name:<27} p50 {p50[name]:8.3f}   p95 {p95[name]:8.3f}")
    base = "in-process invoke"
    for name in ("HTTP, no auth", "HTTP, JWT checked"):
        print(f"  added by {name:<18} p50 {p50[name] - p50[base]:8.3f}   p95 {p95[name] - p95[base]:8.3f}")
    auth, plain = "HTTP, JWT checked", "HTTP, no auth"
    print(f"  of which authentication     p50 {p50[auth] - p50[plain]:8.3f}   p95 {p95[auth] - p95[plain]:8.3f}")


if __name__ == "__main__":
    main()
