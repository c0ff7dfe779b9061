"""What MCP clients expect of tools, checked with two real clients: the official SDK's `Client` (in process, over
stdio and over streamable HTTP, in both protocol eras) and fastmcp's `Client`.

Listing (title, annotations, outputSchema), structured results and what a result breaking its schema becomes,
an unknown tool as a protocol error, progress notifications (heartbeats, and the lines of an image build), results
over 1 MiB over HTTP, and a call cancelled with its container when its client goes away.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import fastmcp
import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from runner.function_tools import function_tool
from runner.pocket import Pocket
from runner.sandbox.labels import LABEL_TOOL
from runner.server import build_server
from tests.helpers import REPO, free_port, settings, wait_listening, write

BIG = 2 * 1024 * 1024  # characters of the large result: twice the Python client's SSE event limit
MODES = ["legacy", "auto"]  # the handshake era (2025-11-25), and the SDK's default: the stateless 2026-07-28


class Point(BaseModel):
    x: int
    y: int


@function_tool(title="Add two numbers", annotations={"readOnlyHint": True, "idempotentHint": True})
def add(a: int, b: int = 1) -> int:
    """Add two integers."""
    return a + b


@function_tool
def point(x: int) -> Point:
    """A point on the diagonal's neighbour."""
    return Point(x=x, y=x + 1)


@function_tool
def liar(x: int) -> Point:
    """Promises a Point, returns something else."""
    return {"x": "not a number"}  # type: ignore[return-value]


@function_tool
def echo(text: str) -> str:
    """Echo the text, untyped output aside."""
    return text


def run(coroutine_function: Any, *args: Any) -> Any:
    return anyio.run(coroutine_function, *args)


def text(result: Any) -> str:
    assert len(result.content) == 1 and result.content[0].type == "text"
    return result.content[0].text


@pytest.fixture
def pocket(tmp_path):
    with Pocket([add, point, liar, echo], settings=settings(tmp_path)) as pocket:
        yield pocket


# -- listing -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_tools_are_listed_with_title_annotations_and_output_schema(pocket, mode):
    async def scenario() -> Any:
        async with Client(build_server(pocket), mode=mode) as client:
            return (await client.list_tools()).tools

    tools = {tool.name: tool for tool in run(scenario)}
    assert tools["add"].title == "Add two numbers"
    hints = tools["add"].annotations.model_dump(by_alias=True, exclude_none=True)
    assert hints == {"readOnlyHint": True, "idempotentHint": True}  # nothing claimed that was not declared
    assert tools["add"].output_schema == pocket.tools["add"].tool.output_schema
    assert tools["point"].output_schema["required"] == ["x", "y"]
    assert (tools["point"].title, tools["point"].annotations) == (None, None)


def test_a_manifest_tool_lists_what_its_pocket_json_declares(tmp_path):
    output = {"type": "object", "properties": {"greeting": {"type": "string"}}, "required": ["greeting"]}
    folder = write(
        tmp_path / "greeter",
        {
            "tool": {
                "name": "greeter",
                "title": "Greeter",
                "description": "Greets.",
                "inputSchema": {"type": "object"},
                "outputSchema": output,
                "annotations": {"readOnlyHint": True, "openWorldHint": False},
            },
            "language": "python",
            "entrypoint": {"run": 'echo \'{"greeting": "hi"}\''},
        },
    )

    async def scenario(pocket: Pocket) -> Any:
        async with Client(build_server(pocket)) as client:
            return (await client.list_tools()).tools[0]

    with Pocket([folder], settings=settings(tmp_path)) as pocket:
        tool = run(scenario, pocket)
    assert (tool.title, tool.output_schema) == ("Greeter", output)
    assert tool.annotations.model_dump(by_alias=True, exclude_none=True) == {
        "readOnlyHint": True,
        "openWorldHint": False,
    }


# -- results -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_results_carry_structured_content_matching_the_schema(pocket, mode):
    async def scenario() -> dict[str, Any]:
        async with Client(build_server(pocket), mode=mode) as client:  # the SDK validates structuredContent
            return {
                "wrapped": await client.call_tool("add", {"a": 2, "b": 3}),
                "model": await client.call_tool("point", {"x": 1}),
                "bad_body": await client.call_tool("point", {"x": "one"}),
            }

    results = run(scenario)
    assert (results["wrapped"].structured_content, text(results["wrapped"])) == ({"result": 5}, "5")
    assert results["model"].structured_content == {"x": 1, "y": 2}
    assert json.loads(text(results["model"])) == results["model"].structured_content  # the same JSON as text
    assert results["bad_body"].is_error and results["bad_body"].structured_content is None


@pytest.mark.parametrize("mode", MODES)
def test_a_result_breaking_its_output_schema_is_an_error_result_saying_where(pocket, mode):
    async def scenario() -> Any:
        async with Client(build_server(pocket), mode=mode) as client:
            return await client.call_tool("liar", {"x": 1})

    result = run(scenario)
    assert result.is_error is True and result.structured_content is None
    assert result.meta["pocket/outcome"] == "tool_failed"
    assert text(result) == (
        "error: the tool's result does not match its outputSchema: "
        "result: 'y' is a required property; /x: 'not a number' is not of type 'integer'\n"
        'the result:\n{"x": "not a number"}'
    )


@pytest.mark.docker
def test_a_sandboxed_tool_is_held_to_its_output_schema(tmp_path, docker_api):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}

    def tool(name: str, printed: str) -> Path:
        return write(
            tmp_path / name,
            {
                "tool": {"name": name, "description": "Prints.", "inputSchema": {}, "outputSchema": schema},
                "language": "python",
                "entrypoint": {"run": f"echo '{printed}'"},
            },
        )

    async def scenario(pocket: Pocket) -> Any:
        async with Client(build_server(pocket)) as client:
            return await client.call_tool("keeps", {}), await client.call_tool("breaks", {})

    folders = [tool("keeps", '{"n": 7}'), tool("breaks", "seven")]
    with Pocket(folders, settings=settings(tmp_path)) as pocket:
        keeps, breaks = run(scenario, pocket)
    assert (keeps.is_error, keeps.structured_content) == (False, {"n": 7}), text(keeps)
    assert breaks.is_error and breaks.structured_content is None
    assert text(breaks).startswith(
        "error: the tool's result does not match its outputSchema: the result must be a JSON object, got a string"
    )


@pytest.mark.parametrize("mode", MODES)
def test_an_unknown_tool_is_a_protocol_error(pocket, mode):
    async def scenario() -> MCPError:
        async with Client(build_server(pocket), mode=mode) as client:
            with pytest.raises(MCPError) as info:
                await client.call_tool("nope", {})
            assert (await client.call_tool("add", {"a": 1})).is_error is False  # the session goes on
            return info.value

    error = run(scenario)
    assert error.code == -32602
    assert error.message == "unknown tool 'nope' (known: add, echo, liar, point)"


# -- progress ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_long_call_reports_progress_while_it_runs(tmp_path, mode):
    heard = anyio.Event()

    @function_tool
    async def wait_for_progress() -> str:
        """Returns once the client has heard progress twice: a call that cannot end without heartbeats."""
        await heard.wait()
        return "heard"

    messages: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append((progress, message))
        if len(messages) == 2:
            heard.set()

    async def scenario(pocket: Pocket) -> Any:
        async with Client(build_server(pocket, progress_interval=0.05), mode=mode) as client:
            quiet = await client.call_tool("echo", {"text": "no token, no progress"})
            return quiet, await client.call_tool("wait_for_progress", {}, progress_callback=on_progress)

    with Pocket([echo, wait_for_progress], settings=settings(tmp_path)) as pocket:
        quiet, result = run(scenario, pocket)
    assert text(quiet) == "no token, no progress" and text(result) == "heard"
    assert [progress for progress, _ in messages] == [1, 2]  # increasing, as the protocol requires
    assert all(message.startswith("wait_for_progress: running for ") for _, message in messages)


@pytest.mark.docker
def test_a_first_call_reports_its_image_build(tmp_path, docker_api):
    name = f"slowbuild_{uuid.uuid4().hex[:8]}"  # its own image: the build happens in this test
    folder = write(
        tmp_path / name,
        {
            "tool": {"name": name, "description": "Built first.", "inputSchema": {"type": "object"}},
            "language": "python",
            "entrypoint": {"build": "echo compiling-the-tool", "run": "echo built-and-run"},
        },
    )
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    async def scenario(pocket: Pocket) -> Any:
        async with Client(build_server(pocket), mode="legacy") as client:
            return await client.call_tool(name, {}, progress_callback=on_progress)

    with Pocket([folder], settings=settings(tmp_path)) as pocket:
        result = run(scenario, pocket)
        tag = pocket.sandbox.image(pocket.tools[name])
    docker_api.remove_image(tag, force=True)
    assert text(result) == "built-and-run"
    building = [m for m in messages if m.startswith((f"build {name}: ", "building image ", "built "))]
    assert building, messages  # a burst of lines may arrive as one notification: at least one says "build"


# -- real transports: a server process ----------------------------------------------------------------------

SERVER_SCRIPT = """
import sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from runner.function_tools import function_tool
from runner.server import serve
from runner.pocket import Pocket

@function_tool
def big(size: int) -> str:
    '''A long text.'''
    return "x" * size

@function_tool
def length(text: str) -> int:
    '''The length of a text.'''
    return len(text)

@function_tool
def liar(x: int) -> dict[str, int]:
    '''Promises integers, returns a string.'''
    return {{"x": "not a number"}}

@function_tool
def wait_for_file(path: str) -> str:
    '''Returns once `path` exists (the test creates it when it has heard progress).'''
    while not Path(path).exists():
        time.sleep(0.05)
    return "released"

port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
serve(Pocket([big, length, liar, wait_for_file, {napper!r}]), transport=sys.argv[1], port=port, user_id="default")
"""

NAPPER = {
    "tool": {"name": "napper", "description": "Sleeps.", "inputSchema": {"type": "object"}},
    "language": "python",
    "sandbox": {"timeout_seconds": 600},
    "entrypoint": {"run": "python -c \"import time; print('napping', flush=True); time.sleep(100000)\""},
}


def _server(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    napper = write(tmp_path / f"napper{uuid.uuid4().hex[:6]}", NAPPER)
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent(SERVER_SCRIPT.format(repo=str(REPO), napper=str(napper))))
    environment = {
        **os.environ,
        "POCKET_CACHE_DIR": str(tmp_path / "cache"),
        "POCKET_DATA_DIR": str(tmp_path / "data"),
        "POCKET_SANDBOX__POOL_SIZE": "0",  # the only container of the tool is the call's
    }
    return [sys.executable, str(script)], environment


@contextlib.contextmanager
def _http_server(tmp_path: Path) -> Iterator[str]:
    command, environment = _server(tmp_path)
    port = free_port()
    process = subprocess.Popen([*command, "http", str(port)], cwd=REPO, env=environment, stderr=subprocess.PIPE)
    try:
        if not wait_listening(port, process, timeout=30):
            raise AssertionError(f"the server did not listen: {process.stderr.read() if process.poll() else ''}")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(20)


@pytest.fixture(scope="module")
def http_url(tmp_path_factory) -> Iterator[str]:
    with _http_server(tmp_path_factory.mktemp("http")) as url:
        yield url


async def _call_heard(client: Any, release: Path) -> tuple[Any, list[str]]:
    """Call wait_for_file, which ends only once the client has heard progress (its heartbeat, 5 s in)."""
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")
        release.touch()

    return await client.call_tool("wait_for_file", {"path": str(release)}, progress_callback=on_progress), messages


def test_progress_over_stdio(tmp_path):
    command, environment = _server(tmp_path)
    params = StdioServerParameters(command=command[0], args=[command[1], "stdio"], env=environment, cwd=str(REPO))

    async def scenario() -> Any:
        async with Client(params) as client:
            return await _call_heard(client, tmp_path / "release")

    result, messages = run(scenario)
    assert text(result) == "released"
    assert messages[0].startswith("wait_for_file: running for ")


def test_progress_over_http_rides_the_session_stream(http_url, tmp_path):
    async def scenario() -> Any:
        async with Client(http_url, mode="legacy") as client:  # handshake era: the TypeScript SDK's, the Inspector's
            return await _call_heard(client, tmp_path / "release")

    result, messages = run(scenario)
    assert text(result) == "released"
    assert messages[0].startswith("wait_for_file: running for ")


@pytest.mark.parametrize("mode", MODES)
def test_a_result_over_1_mib_reaches_the_python_client_over_http(http_url, mode):
    async def scenario() -> Any:
        async with Client(http_url, mode=mode) as client:
            return await client.call_tool("big", {"size": BIG})

    result = run(scenario)
    assert result.is_error is False and text(result) == "x" * BIG
    assert result.structured_content == {"result": "x" * BIG}


def test_a_request_body_reaches_the_tool_whole_up_to_the_limit_and_no_further(http_url):
    async def scenario() -> Any:
        async with Client(http_url) as client:
            return await client.call_tool("length", {"text": "x" * (3 * 1024 * 1024)})

    assert run(scenario).structured_content == {"result": 3 * 1024 * 1024}

    too_big = b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "' + b"x" * (5 * 1024 * 1024) + b'"}}'
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    answer = httpx.post(http_url, content=too_big, headers=headers, timeout=30)
    assert answer.status_code == 413  # refused before it is all held in memory


@pytest.mark.docker
@pytest.mark.parametrize("mode", MODES)
def test_closing_the_session_cancels_the_call_and_removes_its_container(tmp_path, docker_api, mode):
    with _http_server(tmp_path) as url:
        napper = {"label": f"{LABEL_TOOL}=napper"}
        before = {c["Id"] for c in docker_api.containers(all=True, filters=napper)}  # another test's, if any

        def ours() -> list[dict[str, Any]]:
            return [c for c in docker_api.containers(all=True, filters=napper) if c["Id"] not in before]

        async def scenario() -> None:
            async with Client(url, mode=mode) as client, anyio.create_task_group() as group:
                group.start_soon(client.call_tool, "napper", {})
                while not any(c["State"] == "running" for c in ours()):
                    await anyio.sleep(0.05)
                group.cancel_scope.cancel()  # the client leaves while the call runs

        try:
            run(scenario)
        except* anyio.ClosedResourceError:  # the SDK client's own teardown racing the server's answer to the cancel
            pass
        deadline = time.monotonic() + 30
        while ours() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ours() == []  # killed and removed by the engine, while the server runs on


# -- a second client: fastmcp's ------------------------------------------------------------------------------


def test_fastmcp_client_over_http(http_url):
    async def scenario() -> dict[str, Any]:
        async with fastmcp.Client(http_url) as client:  # fastmcp's default: the stateless era
            listed = {tool.name: tool for tool in await client.list_tools()}
            big = await client.call_tool("big", {"size": BIG})
            with pytest.raises(Exception) as unknown:
                await client.call_tool("nope", {})
            return {"listed": listed, "big": big, "unknown": unknown.value}

    results = run(scenario)
    assert results["listed"]["big"].output_schema["required"] == ["result"]
    assert results["big"].structured_content == {"result": "x" * BIG}
    assert results["big"].data.result == "x" * BIG  # fastmcp's object built from the outputSchema
    assert "unknown tool 'nope'" in str(results["unknown"])


def test_fastmcp_client_hears_progress_over_http_in_a_session(http_url, tmp_path):
    async def scenario() -> Any:
        async with fastmcp.Client(http_url, mode="legacy") as client:
            heard: list[str] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                heard.append(message or "")
                (tmp_path / "release").touch()

            path = str(tmp_path / "release")
            return await client.call_tool("wait_for_file", {"path": path}, progress_handler=on_progress), heard

    result, heard = run(scenario)
    assert result.structured_content == {"result": "released"}
    assert heard[0].startswith("wait_for_file: running for ")


def test_fastmcp_client_sees_a_broken_contract_as_an_error(http_url):
    async def scenario() -> Any:
        async with fastmcp.Client(http_url) as client:
            return await client.call_tool("liar", {"x": 1}, raise_on_error=False)

    result = run(scenario)
    assert result.is_error and result.structured_content is None
    assert result.content[0].text.startswith(
        "error: the tool's result does not match its outputSchema: /x: 'not a number' is not of type 'integer'"
    )
