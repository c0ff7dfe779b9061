"""Every tool of a `Pocket` over the Model Context Protocol, on the official `mcp` SDK (extra: `mcp`).

`pocket serve SOURCE...` runs it on stdio (what MCP clients launch) or, with `--http`, as a streamable
HTTP endpoint at `http://HOST:PORT/mcp`: an OAuth resource server whose calls run as each token's user
(`[server]` settings, see runner.server.resource), or, explicitly and on loopback only, one user's without
authentication. A call needing a provider's consent asks with URL elicitation where the client supports
it (see elicitation).

Tools are listed with their title, annotations (MCP's hints) and outputSchema. Every call of a known tool
answers with a result, never a protocol error, for what the agent did or what the tool did: a bad body, a
failing tool and a tool needing authorization come back as `isError: true` results whose text says what
happened; for authorization the text carries the URL to open, and `_meta` carries it as data too
(`pocket/outcome`, `pocket/auth_url`). A tool with an outputSchema answers with `structuredContent` checked
against it; a result that breaks it is an error result saying where. An unknown tool is a protocol error
(-32602, invalid params), as the specification says.

A call whose request carries a progressToken gets progress notifications (runner.server.progress). A call whose
client goes away (a closed session, a dropped request) is cancelled: a sandboxed tool's container is killed.
Over HTTP every response is one JSON body, not an SSE stream (`JSON_RESPONSES`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

try:
    import mcp_types as types
    from mcp.server import Server
    from mcp.shared.exceptions import MCPError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the MCP server needs the mcp SDK: pip install 'pocket-runner[mcp]'") from exc

from runner import __version__, telemetry
from runner.errors import PocketError
from runner.function_tools import FunctionTool
from runner.invocation import Invocation, Outcome
from runner.server.cancel import CancelOnDisconnect
from runner.server.elicitation import ConsentRequest
from runner.server.progress import HEARTBEAT_SECONDS, ProgressRelay, reporting_progress
from runner.server.resource import caller_of
from runner.structured import structured_result

if TYPE_CHECKING:
    from runner.pocket import Pocket, Tool
    from runner.server.consent_links import ConsentLinks
    from runner.settings import ServerSettings

__all__ = [
    "build_server",
    "call_result",
    "check_http_mode",
    "http_app",
    "listen",
    "mcp_tool",
    "mcp_tools",
    "serve",
    "serve_http",
    "serve_stdio",
]

SERVER_NAME = "pocket-runner"
DEFAULT_PORT = 8000
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# One JSON body per response over HTTP: the official Python client refuses an SSE event over 1 MiB, so a large
# result would never arrive as an event. The price: nothing else travels with a call's response, so progress
# takes the session's stream (handshake era only: a stateless request has none) and the server cannot send a
# request back on it (elicitation); stdio keeps both. runner.server.cancel restores cancellation on disconnect.
JSON_RESPONSES = True
RESULT_SHOWN = 4096  # characters of a result shown in the error saying it breaks its outputSchema


def mcp_tool(tool: Tool) -> types.Tool:
    """One tool as MCP lists it: name, title, description, input and output schemas, annotations."""
    from runner.specs import api_input_schema

    spec = tool.tool
    hints = spec.annotations.hints() if spec.annotations else {}
    return types.Tool(
        name=spec.name,
        title=spec.title,
        description=spec.description,
        inputSchema=api_input_schema(spec.input_schema),
        outputSchema=spec.output_schema,
        annotations=types.ToolAnnotations.model_validate(hints) if hints else None,
    )


def mcp_tools(pocket: Pocket) -> list[types.Tool]:
    """Every tool of `pocket` as MCP lists it."""
    return [mcp_tool(tool) for tool in pocket.tools.values()]


def unknown_tool(pocket: Pocket, name: str) -> MCPError:
    """The protocol error for a call of a tool this server does not have."""
    known = ", ".join(sorted(pocket.tools)) or "none"
    return MCPError(types.INVALID_PARAMS, f"unknown tool {name!r} (known: {known})")


def _breaking_schema(invocation: Invocation, problems: tuple[str, ...]) -> Invocation:
    """A successful invocation whose result breaks the tool's outputSchema, as the failure it is for a client."""
    shown = invocation.text()
    if len(shown) > RESULT_SHOWN:
        shown = f"{shown[:RESULT_SHOWN]}... ({len(shown)} characters in all)"
    error = f"the tool's result does not match its outputSchema: {'; '.join(problems)}\nthe result:\n{shown}"
    return dataclasses.replace(invocation, outcome=Outcome.TOOL_FAILED, error=error, value=None)


def checked_output(invocation: Invocation, tool: Tool | None) -> tuple[Invocation, dict[str, Any] | None]:
    """The structured content of a successful call of a tool with an outputSchema; a result that breaks the schema
    makes the invocation the failure it is for a client (and there is no structured content)."""
    if tool is None or tool.tool.output_schema is None or not invocation.ok:
        return invocation, None
    wrapped = isinstance(tool, FunctionTool) and tool.output_wrapped
    result = structured_result(tool.tool.output_schema, invocation.value, wrapped=wrapped)
    if result.problems:
        return _breaking_schema(invocation, result.problems), None
    return invocation, result.content


def call_result(invocation: Invocation, tool: Tool | None = None) -> types.CallToolResult:
    """An invocation as an MCP tool result: its text, `isError` unless it succeeded, the outcome in `_meta`;
    for a `tool` with an outputSchema, the result as `structuredContent` once it is checked against it."""
    invocation, content = checked_output(invocation, tool)
    structured = {"structuredContent": content} if content is not None else {}
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
        **structured,
    )


def build_server(
    pocket: Pocket,
    *,
    user_id: str = "default",
    name: str = SERVER_NAME,
    progress_interval: float = HEARTBEAT_SECONDS,
    links: ConsentLinks | None = None,
) -> Server[Any]:
    """An MCP server (the SDK's low-level `Server`) exposing every tool of `pocket`. Calls run as the user the
    request's access token names (see runner.server.resource), else as `user_id` (stdio, unauthenticated loopback);
    consent URLs are shown as `links` hands them out, when given. A call asking for progress hears from it every
    `progress_interval` seconds at least."""
    tools = mcp_tools(pocket)
    relay = ProgressRelay()
    wait = pocket.settings.server.consent_wait_seconds
    consent = ConsentRequest(pocket.authenticator, wait_seconds=wait, links=links)

    @contextlib.asynccontextmanager
    async def lifespan(_server: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        with pocket.progress.listening(relay):  # the sandbox's lines, for the calls in flight
            yield {}

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(
        ctx: Any, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        tool = pocket.tools.get(params.name)
        if tool is None:
            raise unknown_tool(pocket, params.name)
        arguments = params.arguments if params.arguments is not None else {}
        caller = caller_of(ctx.request)
        user = caller.user_id if caller is not None else user_id

        def invoke() -> Awaitable[Invocation]:
            call = pocket.ainvoke(params.name, arguments, user_id=user)
            return reporting_progress(ctx, tool, call, relay, progress_interval)

        with telemetry.mcp_call(ctx):  # the caller's trace, and the audit record's surface
            answer = await consent.resolve(ctx, params, await invoke(), user, invoke)
        return answer if isinstance(answer, types.InputRequiredResult) else call_result(answer, tool)

    return Server(
        name,
        version=__version__,
        instructions="Tools run by pocket-runner: sandboxed containers and in-process functions.",
        lifespan=lifespan,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def serve_stdio(pocket: Pocket, *, user_id: str = "default") -> None:
    """Serve on stdin/stdout until the client closes them."""
    from mcp.server.stdio import stdio_server

    server = build_server(pocket, user_id=user_id)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def http_app(pocket: Pocket, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, user_id: str | None = None) -> Any:
    """The streamable HTTP endpoint (an ASGI app, MCP at `/mcp`). With `[server] issuers` it is an OAuth resource
    server (each token names its user) that also serves the consent pages; else, on loopback only and with an
    explicit `user_id`, every call runs as that user. DNS-rebinding protection on loopback either way."""
    settings = pocket.settings.server
    check_http_mode(settings, host, user_id)
    if not settings.issuers:
        app = build_server(pocket, user_id=user_id or "default").streamable_http_app(
            host=host, json_response=JSON_RESPONSES
        )
        app.add_middleware(CancelOnDisconnect)  # a call ends when its client goes away
        return app
    import httpx
    from mcp.server.transport_security import TransportSecuritySettings

    from runner.auth.asgi_pages import ConsentPages
    from runner.server.consent_links import ConsentLinks
    from runner.server.resource import ResourceServer, TokenValidator, canonical_resource

    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    resource = canonical_resource(settings.public_url or f"http://{where}/mcp")
    public = urlsplit(resource).netloc
    hosts = {public, where, f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=sorted(hosts),
        allowed_origins=sorted(f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")),
    )
    base_url = resource.removesuffix("/mcp")
    http = httpx.AsyncClient(timeout=pocket.settings.credentials.http_timeout_seconds, follow_redirects=False)
    validator = TokenValidator(settings, resource, http)
    links = None
    if settings.login_client_id and settings.login_client_secret is not None:
        trusted = validator.issuer(settings.issuers[0])
        assert trusted is not None
        ttl = pocket.settings.credentials.authorization_timeout_seconds
        links = ConsentLinks(settings, trusted, base_url, ttl=ttl)
    server = build_server(pocket, links=links)
    app = server.streamable_http_app(host=host, transport_security=security, json_response=JSON_RESPONSES)
    app.add_middleware(CancelOnDisconnect)
    app = ConsentPages(app, pocket.authenticator.serve_pages_at(base_url), hosts)
    return ResourceServer(links.front(app) if links else app, validator, settings, http=http)


def check_http_mode(settings: ServerSettings, host: str, user_id: str | None) -> None:
    """Serving HTTP is authenticated (`[server] issuers`), or explicitly not (`user_id`) and on loopback only."""
    if settings.issuers and user_id is not None:
        raise PocketError(
            "an authenticated server ([server] issuers) calls as the user each access token names: "
            "drop --user and --no-auth"
        )
    if not settings.issuers and user_id is None:
        raise PocketError(
            "serving MCP over HTTP needs authentication: set [server] issuers (and public_url) in the settings, "
            "or pass --no-auth to serve one user on loopback without it"
        )
    if not settings.issuers and host not in LOOPBACK:
        raise PocketError(
            f"refusing to serve without authentication on {host}, which is not loopback: anyone reaching it "
            "would use the stored credentials; set [server] issuers"
        )
    if settings.issuers and not settings.public_url and _unspecified(host):
        raise PocketError(
            f"serving on {host} (every address) needs [server] public_url, the URL clients reach "
            "(https://tools.example.com/mcp): it is the resource their tokens are issued for and the Host this "
            f"server answers; http://{host}:PORT/mcp is neither"
        )


def _unspecified(host: str) -> bool:
    """Whether `host` is a wildcard address (0.0.0.0, ::), which no client can name."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return not host


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
    user_id: str | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve streamable HTTP at `http://HOST:PORT/mcp` (or on `sock`, from `listen`) until interrupted; see
    `http_app` for who calls run as."""
    import uvicorn

    check_http_mode(pocket.settings.server, host, user_id)
    # We bind the socket ourselves: uvicorn reports a port in use with a log line and sys.exit(3).
    sock = sock or listen(host, port)
    app = http_app(pocket, host=host, port=sock.getsockname()[1], user_id=user_id)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
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
    user_id: str | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve `pocket` over `transport` ("stdio" or "http") until the client leaves or the process is stopped.

    On stdio calls run as `user_id` ("default" if None); over HTTP see `http_app`. For HTTP, `sock` is a socket
    `listen` already bound (so that a port in use is known before any banner).
    """
    if transport == "stdio":
        import anyio

        anyio.run(lambda: serve_stdio(pocket, user_id=user_id or "default"))
    elif transport == "http":
        serve_http(pocket, host=host, port=port, user_id=user_id, sock=sock)
    else:
        raise ValueError(f"unknown MCP transport {transport!r}: use stdio or http")
