"""Every tool of a `Pocket` over the Model Context Protocol, on the official `mcp` SDK (extra: `mcp`).

`pocket serve SOURCE...` runs it on stdio (what MCP clients launch) or, with `--http`, as a streamable
HTTP endpoint at `http://127.0.0.1:PORT/mcp`, bound to loopback unless another host is asked for.

Every call answers with a result, never a protocol error, for what the agent did or what the tool did:
a bad body, a failing tool and a tool needing authorization come back as `isError: true` results whose
text says what happened; for authorization the text carries the URL to open, and `_meta` carries it as
data too (`pocket/outcome`, `pocket/auth_url`). An unknown tool is the same kind of result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import mcp_types as types
    from mcp.server import Server
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the MCP server needs the mcp SDK: pip install 'pocket-runner[mcp]'") from exc

from runner import __version__
from runner.invocation import Invocation

if TYPE_CHECKING:
    from runner.pocket import Pocket

__all__ = ["build_server", "call_result", "mcp_tools", "serve", "serve_http", "serve_stdio"]

SERVER_NAME = "pocket-runner"
DEFAULT_PORT = 8000


def mcp_tools(pocket: Pocket) -> list[types.Tool]:
    """Every tool of `pocket` as MCP lists it: name, description, input schema."""
    from runner.specs import api_input_schema

    return [
        types.Tool(name=name, description=tool.tool.description, inputSchema=api_input_schema(tool.tool.input_schema))
        for name, tool in pocket.tools.items()
    ]


def call_result(invocation: Invocation) -> types.CallToolResult:
    """An invocation as an MCP tool result: its text, `isError` unless it succeeded, the outcome in `_meta`."""
    meta: dict[str, Any] = {"pocket/outcome": invocation.outcome.value}
    if invocation.auth_url:
        meta["pocket/auth_url"] = invocation.auth_url
    text = invocation.text()
    if invocation.auth_url and invocation.auth_url not in text:
        text += f"\nOpen this URL to authorize, then call the tool again: {invocation.auth_url}"
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        isError=not invocation.ok,
        _meta=meta,
    )


def build_server(pocket: Pocket, *, user_id: str = "default", name: str = SERVER_NAME) -> Server[Any]:
    """An MCP server (the SDK's low-level `Server`) exposing every tool of `pocket`, calling as `user_id`."""
    tools = mcp_tools(pocket)

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments if params.arguments is not None else {}
        return call_result(await pocket.ainvoke(params.name, arguments, user_id=user_id))

    return Server(
        name,
        version=__version__,
        instructions="Tools run by pocket-runner: sandboxed containers and in-process functions.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def serve_stdio(pocket: Pocket, *, user_id: str = "default") -> None:
    """Serve on stdin/stdout until the client closes them."""
    from mcp.server.stdio import stdio_server

    server = build_server(pocket, user_id=user_id)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def http_app(pocket: Pocket, *, user_id: str = "default", host: str = "127.0.0.1") -> Any:
    """The streamable HTTP endpoint (a Starlette app, MCP at `/mcp`), with DNS-rebinding protection on loopback."""
    return build_server(pocket, user_id=user_id).streamable_http_app(host=host)


def serve_http(pocket: Pocket, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, user_id: str = "default") -> None:
    """Serve streamable HTTP at `http://HOST:PORT/mcp` until interrupted."""
    import uvicorn

    uvicorn.run(http_app(pocket, user_id=user_id, host=host), host=host, port=port, log_level="warning")


def serve(
    pocket: Pocket,
    *,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    user_id: str = "default",
) -> None:
    """Serve `pocket` over `transport` ("stdio" or "http") until the client leaves or the process is stopped."""
    if transport == "stdio":
        import anyio

        anyio.run(lambda: serve_stdio(pocket, user_id=user_id))
    elif transport == "http":
        serve_http(pocket, host=host, port=port, user_id=user_id)
    else:
        raise ValueError(f"unknown MCP transport {transport!r}: use stdio or http")
