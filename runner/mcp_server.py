"""Every tool of a `Pocket` over the Model Context Protocol, on the official `mcp` SDK (extra: `mcp`).

`pocket serve SOURCE...` runs it on stdio (what MCP clients launch) or, with `--http`, as a streamable
HTTP endpoint at `http://127.0.0.1:PORT/mcp`, bound to loopback unless another host is asked for.

Every call answers with a result, never a protocol error, for what the agent did or what the tool did:
a bad body, a failing tool and a tool needing authorization come back as `isError: true` results whose
text says what happened; for authorization the text carries the URL to open, and `_meta` carries it as
data too (`pocket/outcome`, `pocket/auth_url`). An unknown tool is the same kind of result.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import TYPE_CHECKING, Any

try:
    import mcp_types as types
    from mcp.server import Server
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the MCP server needs the mcp SDK: pip install 'pocket-runner[mcp]'") from exc

from runner import __version__, telemetry
from runner.errors import PocketError
from runner.invocation import Invocation

if TYPE_CHECKING:
    from runner.pocket import Pocket

__all__ = ["build_server", "call_result", "listen", "mcp_tools", "serve", "serve_http", "serve_stdio"]

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
        with telemetry.mcp_call(ctx):  # the caller's trace, and the audit record's surface
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


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on HOST:PORT, or a PocketError saying why not (a port in use, an unknown host)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except socket.gaierror as exc:
        raise PocketError(f"cannot listen on {where}: unknown host ({exc.strerror})") from None
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        hint = "; pick another with --port" if exc.errno == errno.EADDRINUSE else ""
        raise PocketError(f"cannot listen on {where}: {reason}{hint}") from None


def serve_http(
    pocket: Pocket,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    user_id: str = "default",
    sock: socket.socket | None = None,
) -> None:
    """Serve streamable HTTP at `http://HOST:PORT/mcp` (or on `sock`, from `listen`) until interrupted."""
    import uvicorn

    # We bind the socket ourselves: uvicorn reports a port in use with a log line and sys.exit(3).
    sock = sock or listen(host, port)
    server = uvicorn.Server(uvicorn.Config(http_app(pocket, user_id=user_id, host=host), log_level="warning"))
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:
        if type(exc) is not SystemExit or exc.code in (None, 0):
            raise  # a subclass is someone's own exit (the CLI's on SIGTERM), not uvicorn's
        raise PocketError(f"the MCP HTTP server on {host}:{port} could not start") from None  # uvicorn's exit(3)
    finally:
        sock.close()


def serve(
    pocket: Pocket,
    *,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    user_id: str = "default",
    sock: socket.socket | None = None,
) -> None:
    """Serve `pocket` over `transport` ("stdio" or "http") until the client leaves or the process is stopped.

    For HTTP, `sock` is a socket `listen` already bound (so that a port in use is known before any banner).
    """
    if transport == "stdio":
        import anyio

        anyio.run(lambda: serve_stdio(pocket, user_id=user_id))
    elif transport == "http":
        serve_http(pocket, host=host, port=port, user_id=user_id, sock=sock)
    else:
        raise ValueError(f"unknown MCP transport {transport!r}: use stdio or http")
