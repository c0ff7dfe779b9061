"""A call whose user has not yet authorized a provider, answered with URL-mode elicitation (MCP, SEP-1036).

A client that declares URL elicitation is shown the link the standard way, in the form of the revision it
speaks, and the call completes once the consent callback lands:

- 2026-07-28 (stateless): the call answers `InputRequiredResult` carrying an `elicitation/create` request
  (mode "url", no `elicitationId`); the client shows the link and retries the call with the person's answer
  in `inputResponses`; on "accept" the retry waits for the consent, then runs the tool.
- 2025-11-25 (sessions): where the call has a stream back to the client (stdio; HTTP with SSE responses), the
  server sends `elicitation/create` (mode "url", an `elicitationId`) on it; on "accept" it waits for the
  consent, sends `notifications/elicitation/complete` with that id, and runs the tool. Where it has none (HTTP
  with JSON responses), the call fails with that revision's URLElicitationRequiredError (-32042) carrying the
  same request, and `notifications/elicitation/complete` follows on the session's stream once the consent
  landed, for the client to call again.

A client without URL elicitation, a person who declines, or a consent that does not land within
`[server] consent_wait_seconds` gets today's result: `auth_required`, the URL in its text, and a later call
succeeds once the person has authorized.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import mcp_types as types
from mcp.shared.exceptions import MCPError, UrlElicitationRequiredError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from runner.invocation import Invocation, Outcome

if TYPE_CHECKING:
    from runner.auth.authenticator import Authenticator
    from runner.server.consent_links import ConsentLinks

__all__ = ["INPUT_KEY", "ConsentRequest"]

INPUT_KEY = "pocket/authorize"  # the key of our request in `inputRequests` / `inputResponses` (2026-07-28)
_POLL_SECONDS = 0.25


def _supports_url_elicitation(ctx: Any) -> bool:
    capabilities = ctx.session.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and elicitation.url is not None


class ConsentRequest:
    """Asks, over MCP, for the consent an `auth_required` invocation needs; `resolve` is called with every
    invocation of a tool call and returns the invocation to answer with (the first, or the call run again
    once consent landed), or the `InputRequiredResult` that asks for it (2026-07-28)."""

    def __init__(self, authenticator: Authenticator, *, wait_seconds: float, links: ConsentLinks | None = None):
        self._authenticator = authenticator
        self._wait_seconds = wait_seconds
        self._links = links  # when set, the URL shown is a link only its user can follow
        self._watching: set[asyncio.Task[None]] = set()  # completions to send once consent lands

    def _shown(self, invocation: Invocation, user_id: str) -> Invocation:
        return self._links.guard(invocation, user_id) if self._links is not None else invocation

    async def resolve(
        self,
        ctx: Any,
        params: types.CallToolRequestParams,
        invocation: Invocation,
        user_id: str,
        again: Callable[[], Awaitable[Invocation]],
    ) -> Invocation | types.InputRequiredResult:
        invocation = self._shown(invocation, user_id)
        url = invocation.auth_url
        if invocation.outcome is not Outcome.AUTH_REQUIRED or not url or not _supports_url_elicitation(ctx):
            return invocation
        message = f"The tool {invocation.tool} needs your authorization: open the link, grant access, and it runs."
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            answer = (params.input_responses or {}).get(INPUT_KEY)
            if answer is None:
                request = types.ElicitRequest(params=types.ElicitRequestURLParams(message=message, url=url))
                return types.InputRequiredResult(input_requests={INPUT_KEY: request})
            if not isinstance(answer, types.ElicitResult) or answer.action != "accept":
                return invocation
            if not await self._consented(user_id, url):
                return invocation
            return self._shown(await again(), user_id)
        elicitation_id = secrets.token_urlsafe(16)
        if not ctx.session.can_send_request:  # JSON responses: nothing can be sent back within this call
            self._complete_later(ctx, user_id, url, elicitation_id)
            params = types.ElicitRequestURLParams(message=message, url=url, elicitation_id=elicitation_id)
            raise UrlElicitationRequiredError([params], message)
        try:
            answer = await ctx.session.elicit_url(message, url, elicitation_id, related_request_id=ctx.request_id)
        except MCPError:
            return invocation
        if answer.action != "accept" or not await self._consented(user_id, url):
            return invocation
        await ctx.session.send_elicit_complete(elicitation_id, related_request_id=ctx.request_id)
        return self._shown(await again(), user_id)

    def _complete_later(self, ctx: Any, user_id: str, url: str, elicitation_id: str) -> None:
        """Once the consent behind `url` landed, say so on the session's own stream, where the client waits for
        it before calling again (2025-11-25's URLElicitationRequiredError flow)."""

        async def watch() -> None:
            if await self._consented(user_id, url):
                with contextlib.suppress(Exception):  # the session may be gone: the next call succeeds anyway
                    await ctx.session.send_elicit_complete(elicitation_id)

        task = asyncio.get_running_loop().create_task(watch())
        self._watching.add(task)
        task.add_done_callback(self._watching.discard)

    async def _consented(self, user_id: str, url: str) -> bool:
        """Wait until the authorization request behind `url` has ended (its callback landed, or it failed or
        expired): True then, False when `consent_wait_seconds` passed first."""
        url = self._links.original(url) if self._links is not None else url
        deadline = time.monotonic() + self._wait_seconds
        while time.monotonic() < deadline:
            pending = await anyio.to_thread.run_sync(self._authenticator.pending, user_id)
            if not any(request.url == url for request in pending):
                return True
            await anyio.sleep(_POLL_SECONDS)
        return False
