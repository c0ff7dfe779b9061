"""An HTTP request's work cancelled when its client goes away (ASGI middleware for the MCP endpoint).

uvicorn tells an application that the client disconnected only through `receive()`, and the SDK, answering a
request with one JSON body, never asks: a stateless (2026-07-28) call would run on, container and all, after
its client closed the connection. This middleware reads the request body, then watches for the disconnect
and cancels the request's handling when it comes, which cancels the tool call (`Pocket.ainvoke` kills its
container). A handshake-era session's calls run in the session, not the request, and end when the
client closes the session (DELETE).
"""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from starlette.responses import PlainTextResponse

Message = dict[str, Any]


class CancelOnDisconnect:
    """Runs the app with the request body replayed, cancelling it when the client disconnects."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # gone before it finished asking
            body.append(message.get("body", b""))
            size += len(body[-1])
            if size > DEFAULT_MAX_REQUEST_BODY_SIZE:  # the SDK's own limit, enforced before buffering more
                await PlainTextResponse("Payload Too Large", status_code=413)(scope, receive, send)
                return
            if not message.get("more_body"):
                break
        disconnected = anyio.Event()
        pending: list[Message] = [{"type": "http.request", "body": b"".join(body), "more_body": False}]

        async def replay() -> Message:
            if pending:
                return pending.pop()
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async with anyio.create_task_group() as group:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                disconnected.set()
                group.cancel_scope.cancel()

            group.start_soon(watch)
            await self.app(scope, replay, send)
            group.cancel_scope.cancel()
