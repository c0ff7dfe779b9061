"""The consent pages (`/auth/PROVIDER/callback`, `/auth/PROVIDER/form`) served by an ASGI server of this
process, the MCP HTTP server, at its public URL: a remote deployment needs one port, and registers one redirect
URI per provider (`PUBLIC_URL/auth/NAME/callback`). Same pages, headers and rules as the loopback server
(callback.py): requests naming another Host are refused, nothing is logged, forms are capped at 64 KiB.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

import anyio.to_thread

from runner.auth.callback import Handler, Page, page_headers, render

_MAX_FORM = 64 * 1024


class ConsentPages:
    """ASGI app answering `/auth/PROVIDER/ACTION` with `handle` (Pages.handle, run on a worker thread: it
    exchanges codes over blocking HTTP); anything else goes to `app`."""

    def __init__(self, app: Any, handle: Handler, hosts: Iterable[str]):
        self._app = app
        self._handle = handle
        self._hosts = {host.lower() for host in hosts}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        parts = scope["path"].strip("/").split("/") if scope["type"] == "http" else []
        if not (len(parts) == 3 and parts[0] == "auth" and parts[2] in ("callback", "form")):
            await self._app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        if headers.get("host", "").lower() not in self._hosts:  # DNS rebinding, or a host we are not
            page = Page(421, "Wrong address", "This server only answers on its own address.", "failure")
        elif scope["method"] == "POST":
            body = await _body(receive)
            page = (
                Page(413, "Too large", "That form is too large.", "failure")
                if body is None
                else await self._answer("POST", parts, body.decode("utf-8", "replace"))
            )
        else:
            page = await self._answer(scope["method"], parts, scope.get("query_string", b"").decode("latin-1"))
        content = render(page)
        head = [(name.lower().encode(), value.encode()) for name, value in page_headers(len(content))]
        await send({"type": "http.response.start", "status": page.status, "headers": head})
        await send({"type": "http.response.body", "body": content})

    async def _answer(self, method: str, parts: list[str], encoded: str) -> Page:
        params = {key: values[0] for key, values in parse_qs(encoded, keep_blank_values=True).items()}
        try:
            return await anyio.to_thread.run_sync(self._handle, method, parts[1], parts[2], params)
        except Exception as exc:  # a bug of ours: say so, never a traceback with secrets
            return Page(500, "Something went wrong", f"pocket could not finish: {type(exc).__name__}", "failure")


async def _body(receive: Any) -> bytes | None:
    """The request body, or None beyond the cap."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > _MAX_FORM:
            return None
        if not message.get("more_body"):
            return body
