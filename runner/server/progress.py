"""Progress notifications of MCP tool calls, for a client whose request carries a `progressToken`.

A first call may wait a minute for its image to build, and a tool may run for long: clients time requests
out (the TypeScript SDK after 60 s unless progress resets its clock), and a person wants to see something
happen. While a call runs, it reports:
- each line the Pocket says while the call waits in the sandbox (an image build, line by line), relayed from
  the worker thread that builds; a burst of lines becomes one notification carrying the latest;
- a heartbeat every `interval` seconds, saying how long the call has run.

Progress values count the notifications, so they increase as the protocol requires; there is no total.
Build lines reach every sandboxed call waiting at that moment: they are about a tool's image, never a user's.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from runner.function_tools import FunctionTool
from runner.invocation import Invocation

if TYPE_CHECKING:
    from runner.pocket import Tool

HEARTBEAT_SECONDS = 5.0  # under the MCP Inspector's 10 s default request timeout (which resets on progress)

Report = Callable[[float, str], Awaitable[None]]
T = TypeVar("T")


class CallProgress:
    """The notifications of one call: lines from any thread, heartbeats on the call's event loop."""

    def __init__(self, tool: str, report: Report, interval: float = HEARTBEAT_SECONDS):
        self.tool, self._report, self._interval = tool, report, interval
        self._loop = asyncio.get_running_loop()
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._started = time.monotonic()
        self._count = 0

    def say(self, line: str) -> None:
        """Queue one line for the client (called from the sandbox's worker threads)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the call is over
            self._loop.call_soon_threadsafe(self._lines.put_nowait, line)

    async def send(self) -> None:
        """Send notifications until cancelled: queued lines as they come, a heartbeat when none came."""
        while True:
            try:
                line = await asyncio.wait_for(self._lines.get(), self._interval)
            except TimeoutError:
                line = f"{self.tool}: running for {time.monotonic() - self._started:.0f} s"
            while not self._lines.empty():  # a burst (a build's output): its latest line says where it is
                line = self._lines.get_nowait()
            self._count += 1
            try:
                await self._report(self._count, line)
            except Exception:  # the client is gone or takes no notifications: the call goes on without them
                return

    async def around(self, call: Awaitable[T]) -> T:
        """Await `call`, sending notifications meanwhile. Cancelling this cancels `call` too."""
        sender = asyncio.ensure_future(self.send())
        try:
            return await call
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender


class ProgressRelay:
    """The Pocket's listener while the server runs: each line goes to every sandboxed call in flight."""

    def __init__(self) -> None:
        self._calls: set[CallProgress] = set()
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            calls = list(self._calls)
        for call in calls:
            call.say(line)

    @contextlib.contextmanager
    def relaying_to(self, call: CallProgress) -> Iterator[None]:
        with self._lock:
            self._calls.add(call)
        try:
            yield
        finally:
            with self._lock:
                self._calls.discard(call)


def progress_sender(ctx: Any) -> Report:
    """How a call's progress reaches its client: on the request's own stream (stdio, in process); over HTTP,
    where a JSON response carries nothing but the result, on the session's stream, which handshake-era
    clients (the TypeScript SDK, the Inspector) keep open and match by token. A stateless call has neither."""
    session = ctx.session
    token = (ctx.meta or {}).get("progress_token")
    if token is not None and not session.can_send_request and session.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return lambda count, line: session.send_progress_notification(token, count, None, line)
    return lambda count, line: session.report_progress(count, None, line)


async def reporting_progress(
    ctx: Any, tool: Tool, call: Awaitable[Invocation], relay: ProgressRelay, interval: float = HEARTBEAT_SECONDS
) -> Invocation:
    """Await `call`, reporting progress meanwhile (a sandboxed tool's build lines through `relay`, and heartbeats):
    the SDK sends the reports when the request asked for them (a progressToken; in process, a callback)."""
    progress = CallProgress(tool.name, progress_sender(ctx), interval)
    if isinstance(tool, FunctionTool):  # nothing to build: heartbeats only
        return await progress.around(call)
    with relay.relaying_to(progress):
        return await progress.around(call)
