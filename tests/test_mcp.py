"""The MCP server, tested with the official SDK's own client: in-process, over stdio and over streamable HTTP."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from runner.function_tools import function_tool
from runner.pocket import Pocket
from runner.server import build_server
from tests.helpers import HELLO, REPO, enter_token, free_port, settings, wait_listening


@function_tool
def add(a: int, b: int = 1) -> int:
    """Add two integers."""
    return a + b


@function_tool
async def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


@function_tool(auth_provider="slack", scopes=["chat:write"])
def post(channel: str, SLACK_BOT_TOKEN: str) -> str:
    """Post to Slack."""
    return f"posted to {channel}"


@pytest.fixture
def pocket(tmp_path):
    with Pocket([add, divide, post, HELLO], settings=settings(tmp_path)) as pocket:
        pocket.authenticator.login_with("slack", {"token": "xoxb-alice"}, user_id="alice")
        yield pocket


def run(coroutine_function: Any) -> Any:
    return anyio.run(coroutine_function)


def text(result: Any) -> str:
    assert len(result.content) == 1 and result.content[0].type == "text"
    return result.content[0].text


def test_list_tools(pocket):
    async def scenario() -> Any:
        async with Client(build_server(pocket)) as client:
            return await client.list_tools()

    tools = {t.name: t for t in run(scenario).tools}
    assert list(tools) == ["add", "divide", "post", "hello"]
    assert tools["add"].description == "Add two integers."
    assert tools["add"].input_schema == pocket.tools["add"].tool.input_schema
    assert "SLACK_BOT_TOKEN" not in str(tools["post"].input_schema)
    assert tools["hello"].input_schema["required"] == ["name"]


def test_call_function_tools_and_mistakes(pocket):
    async def scenario() -> dict[str, Any]:
        async with Client(build_server(pocket)) as client:
            return {
                "ok": await client.call_tool("add", {"a": 2, "b": 3}),
                "async": await client.call_tool("divide", {"a": 1, "b": 4}),
                "bad_body": await client.call_tool("add", {"a": "two"}),
                "no_arguments": await client.call_tool("add"),
                "failed": await client.call_tool("divide", {"a": 1, "b": 0}),
            }

    results = run(scenario)
    assert (text(results["ok"]), results["ok"].is_error) == ("5", False)
    assert results["ok"].meta["pocket/outcome"] == "ok"
    assert text(results["async"]) == "0.25"
    assert results["bad_body"].is_error is True
    assert text(results["bad_body"]) == "error: invalid body: /a: 'two' is not of type 'integer'"
    assert results["bad_body"].meta["pocket/outcome"] == "bad_input"
    assert text(results["no_arguments"]) == "error: invalid body: body: 'a' is a required property"
    assert results["failed"].is_error and text(results["failed"]) == "error: ZeroDivisionError: float division by zero"


def test_a_tool_needing_authorization_answers_with_the_url(pocket):
    async def scenario(user: str) -> Any:
        async with Client(build_server(pocket, user_id=user)) as client:
            return await client.call_tool("post", {"channel": "C1"})

    needs_auth = run(lambda: scenario("bob"))
    assert needs_auth.is_error is True
    assert needs_auth.meta["pocket/outcome"] == "auth_required"
    url = needs_auth.meta["pocket/auth_url"]
    assert url.startswith(f"{pocket.authenticator.base_url()}/auth/slack/form?state=")
    assert f"authorization is needed for user 'bob': open {url} " in text(needs_auth)
    granted = run(lambda: scenario("alice"))
    assert (granted.is_error, text(granted)) == (False, "posted to C1")
    enter_token(url, "xoxb-bob")  # bob opens the URL and pastes his token: his next call goes through
    granted = run(lambda: scenario("bob"))
    assert (granted.is_error, text(granted)) == (False, "posted to C1")


@pytest.mark.docker
def test_call_a_sandboxed_tool(pocket, docker_api):

    async def scenario() -> Any:
        async with Client(build_server(pocket)) as client:
            return await client.call_tool("hello", {"name": "Ada"}), await client.call_tool("hello", {"name": ""})

    ok, bad = run(scenario)
    assert ok.is_error is False, text(ok)
    assert text(ok) == '{"greeting": "Hello, Ada!"}'
    assert bad.is_error is True and "/name" in text(bad)


# -- real transports: a server process, the SDK's client ----------------------------------------------------

SERVER_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from runner.function_tools import function_tool
from runner.server import serve
from runner.pocket import Pocket

@function_tool
def add(a: int, b: int = 1) -> int:
    '''Add two integers.'''
    return a + b

port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
serve(Pocket([add, {hello!r}]), transport=sys.argv[1], port=port, user_id="default")
"""

CLI = "import sys; from runner.cli import main; sys.exit(main(sys.argv[1:]))"


def _server_script(tmp_path: Path) -> str:
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent(SERVER_SCRIPT.format(repo=str(REPO), hello=str(HELLO))))
    return str(script)


def _environment(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "POCKET_CACHE_DIR": str(tmp_path / "cache"), "POCKET_DATA_DIR": str(tmp_path / "data")}


def test_stdio_transport(tmp_path):
    params = StdioServerParameters(
        command=sys.executable, args=[_server_script(tmp_path), "stdio"], env=_environment(tmp_path), cwd=str(REPO)
    )

    async def scenario() -> Any:
        async with Client(params) as client:
            return await client.list_tools(), await client.call_tool("add", {"a": 20, "b": 22})

    listing, result = run(scenario)
    assert [t.name for t in listing.tools] == ["add", "hello"]
    assert (result.is_error, text(result)) == (False, "42")


def test_pocket_serve_on_stdio(tmp_path):
    params = StdioServerParameters(
        command=sys.executable, args=["-c", CLI, "serve", str(HELLO)], env=_environment(tmp_path), cwd=str(REPO)
    )

    async def scenario() -> Any:
        async with Client(params) as client:
            return await client.list_tools(), await client.call_tool("hello", {"name": 5})

    listing, bad = run(scenario)
    assert [t.name for t in listing.tools] == ["hello"]
    assert bad.is_error and text(bad) == "error: invalid body: /name: 5 is not of type 'string'"


def _wait_for_port(port: int, process: subprocess.Popen[Any]) -> None:
    if not wait_listening(port, process, timeout=20):
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stderr.read() if process.stderr else ''}")
        raise AssertionError("the server did not start listening")


@contextlib.contextmanager
def _http_server(tmp_path: Path, command: list[str], port: int) -> Iterator[subprocess.Popen[str]]:
    """`command` (which serves MCP over HTTP on `port`) running until the block ends."""
    process = subprocess.Popen(command, cwd=REPO, env=_environment(tmp_path), stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_port(port, process)
        yield process
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def http_server(tmp_path):
    """`pocket serve --http` on a free loopback port, with the function-tool script as the source of tools."""
    port = free_port()
    with _http_server(tmp_path, [sys.executable, _server_script(tmp_path), "http", str(port)], port):
        yield f"http://127.0.0.1:{port}/mcp"


def test_streamable_http_transport(http_server):
    async def scenario() -> Any:
        async with Client(http_server) as client:
            return (
                await client.list_tools(),
                await client.call_tool("add", {"a": 1}),
                await client.call_tool("add", {"b": 1}),
            )

    listing, ok, bad = run(scenario)
    assert [t.name for t in listing.tools] == ["add", "hello"]
    assert text(ok) == "2"
    assert bad.is_error and "'a' is a required property" in text(bad)


def test_pocket_serve_http_listens_on_loopback(tmp_path):
    port = free_port()
    command = [sys.executable, "-c", CLI, "serve", str(HELLO), "--http", "--no-auth", "--port", str(port)]
    with _http_server(tmp_path, command, port) as process:

        async def scenario() -> Any:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                return await client.list_tools()

        assert [t.name for t in run(scenario).tools] == ["hello"]
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        if listening:  # ss is there: the socket is bound to loopback only
            assert [line.split()[3] for line in listening.splitlines()] == [f"127.0.0.1:{port}"]
    assert f"at http://127.0.0.1:{port}/mcp" in process.stderr.read()


def test_serve_without_sources_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "runner.cli", "serve"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "the following arguments are required: SOURCE" in result.stderr


def _pocket_serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, "serve", str(HELLO), *args],
        cwd=REPO, env=_environment(tmp_path), capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("port", ["99999", "0", "-1", "http"])
def test_serve_refuses_a_port_out_of_range(tmp_path, port):
    result = _pocket_serve(tmp_path, "--http", "--no-auth", f"--port={port}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "argument --port: " in result.stderr and "65535" in result.stderr


def test_serve_on_a_port_in_use_says_so_and_exits_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _pocket_serve(tmp_path, "--http", "--no-auth", "--port", str(port))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"pocket: cannot listen on 127.0.0.1:{port}: address already in use; pick another with --port" in (
        result.stderr
    )
    assert "serving" not in result.stderr  # no banner for a server that never listened


def test_sigterm_stops_pocket_serve_http(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", CLI, "serve", str(HELLO), "--http", "--no-auth", "--port", str(port)],
        cwd=REPO, env=_environment(tmp_path), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for_port(port, process)
        process.terminate()
        _, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert err.endswith("pocket: terminated\n") and "Traceback" not in err
