"""Every tool of a `Pocket` over the Model Context Protocol, on the official `mcp` SDK (extra: `mcp`).

`pocket serve SOURCE...` runs it on stdio (what MCP clients launch) or, with `--http`, as a streamable
HTTP endpoint at `http://HOST:PORT/mcp`: an OAuth resource server whose calls run as each token's user
(`[server]` settings, see resource_server), or, explicitly and on loopback only, one user's without
authentication. A call needing a provider's consent asks with URL elicitation where the client supports
it (see elicitation).

Every call answers with a result, never a protocol error, for what the agent did or what the tool did:
a bad body, a failing tool and a tool needing authorization come back as `isError: true` results whose
text says what happened; for authorization the text carries the URL to open, and `_meta` carries it as
data too (`pocket/outcome`, `pocket/auth_url`). An unknown tool is the same kind of result.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

try:
    import mcp_types as types
    from mcp.server import Server
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the MCP server needs the mcp SDK: pip install 'pocket-runner[mcp]'") from exc

from runner import __version__
from runner.elicitation import ConsentRequest
from runner.errors import PocketError
from runner.invocation import Invocation
from runner.resource_server import caller_of

if TYPE_CHECKING:
    from runner.consent_links import ConsentLinks
    from runner.pocket import Pocket
    from runner.settings import ServerSettings

__all__ = [
    "build_server",
    "call_result",
    "check_http_mode",
    "http_app",
    "listen",
    "mcp_tools",
    "serve",
    "serve_http",
    "serve_stdio",
]

SERVER_NAME = "pocket-runner"
DEFAULT_PORT = 8000
LOOPBACK = ("127.0.0.1", "localhost", "::1")


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


def build_server(
    pocket: Pocket, *, user_id: str = "default", name: str = SERVER_NAME, links: ConsentLinks | None = None
) -> Server[Any]:
    """An MCP server (the SDK's low-level `Server`) exposing every tool of `pocket`. Calls run as the user the
    request's access token names (see resource_server), else as `user_id` (stdio, unauthenticated loopback);
    consent URLs are shown as `links` hands them out, when given."""
    tools = mcp_tools(pocket)
    wait = pocket.settings.server.consent_wait_seconds
    consent = ConsentRequest(pocket.authenticator, wait_seconds=wait, links=links)

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(
        ctx: Any, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        arguments = params.arguments if params.arguments is not None else {}
        caller = caller_of(ctx.request)
        user = caller.user_id if caller is not None else user_id

        def invoke() -> Awaitable[Invocation]:
            return pocket.ainvoke(params.name, arguments, user_id=user)

        answer = await consent.resolve(ctx, params, await invoke(), user, invoke)
        return answer if isinstance(answer, types.InputRequiredResult) else call_result(answer)

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


def http_app(pocket: Pocket, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, user_id: str | None = None) -> Any:
    """The streamable HTTP endpoint (an ASGI app, MCP at `/mcp`). With `[server] issuers` it is an OAuth resource
    server (each token names its user) that also serves the consent pages; else, on loopback only and with an
    explicit `user_id`, every call runs as that user. DNS-rebinding protection on loopback either way."""
    settings = pocket.settings.server
    check_http_mode(settings, host, user_id)
    if not settings.issuers:
        return build_server(pocket, user_id=user_id or "default").streamable_http_app(host=host)
    import httpx
    from mcp.server.transport_security import TransportSecuritySettings

    from runner.auth.asgi_pages import ConsentPages
    from runner.consent_links import ConsentLinks
    from runner.resource_server import ResourceServer, TokenValidator, canonical_resource

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
    # JSON bodies, not SSE events: results over 1 MiB reach the official Python client.
    app = server.streamable_http_app(host=host, transport_security=security, json_response=True)
    app = ConsentPages(app, pocket.authenticator.serve_pages_at(base_url), hosts)
    return ResourceServer(links.front(app) if links else app, validator, settings)


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
