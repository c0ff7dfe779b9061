"""One call of a tool: the typed result, its redaction and cancellation (the body check is runner.schema's).

An invocation never raises for what the agent did (an unknown tool, a bad body, a failing tool,
missing authorization): it returns an `Invocation` the agent can read and act on. The CLI maps
its `outcome` to an exit code.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from runner.errors import ExitCode
from runner.redaction import Redactor


class Outcome(StrEnum):
    OK = "ok"
    BAD_INPUT = "bad_input"  # unknown tool, bad body or timeout, unknown auth provider or handler
    TOOL_FAILED = "tool_failed"  # non-zero exit, timeout, killed, build failure
    AUTH_REQUIRED = "auth_required"  # the user has to grant access first; `auth_url` says where

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode[self.name]


class NetworkAccess(StrEnum):
    """What network a call had, and so how much its receipt can tell."""

    NONE = "none"  # no network at all: nothing to report
    HOSTS = "hosts"  # only the hosts of its allow-list, through the egress proxy: every connection is on the receipt
    OPEN = "open"  # the default bridge (`network: true`): nothing sees its connections
    IN_PROCESS = "in_process"  # a function tool: it runs in the runner's own process, unobserved


@dataclass(frozen=True)
class HostTraffic:
    """Connections the egress proxy made for a call to one host and port, and the bytes each way."""

    host: str
    port: int
    connections: int
    bytes_sent: int  # from the tool to the host
    bytes_received: int  # from the host to the tool


@dataclass(frozen=True)
class RefusedHost:
    """A connection the egress proxy refused, and why (not in the allow-list, a local address...)."""

    host: str
    port: int
    reason: str


@dataclass(frozen=True)
class NetworkReceipt:
    """Where one call connected: hosts reached with bytes each way, and hosts refused (per `access`)."""

    access: NetworkAccess
    reached: tuple[HostTraffic, ...] = ()
    refused: tuple[RefusedHost, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "access": self.access.value,
            "reached": [dataclasses.asdict(entry) for entry in self.reached],
            "refused": [dataclasses.asdict(entry) for entry in self.refused],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkReceipt:
        return cls(
            NetworkAccess(data["access"]),
            tuple(HostTraffic(**entry) for entry in data.get("reached", ())),
            tuple(RefusedHost(**entry) for entry in data.get("refused", ())),
        )


@dataclass(frozen=True)
class Invocation:
    """The result of one tool call.

    `value` is what the tool printed on stdout, parsed as JSON when it is JSON. A failed tool's stdout is
    `stdout` instead (its last 64 KiB), since what it printed before failing may say why. `stderr` is kept
    apart and only shown on failure. Token values never appear in any field (the runner redacts them).
    `network` says where a sandboxed call connected (None when it never reached a container); `image` is the
    id of the image it ran in.
    """

    tool: str
    outcome: Outcome
    value: Any = None
    error: str | None = None
    exit_code: int | None = None
    stderr: str = ""
    stdout: str = ""
    duration_seconds: float = 0.0
    truncated: bool = False
    auth_url: str | None = None
    network: NetworkReceipt | None = None
    image: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def text(self) -> str:
        """The result as the text an agent (or a person) reads."""
        if not self.ok:
            printed = self.stdout.strip()
            return f"error: {self.error}" + (f"\nthe tool printed:\n{printed}" if printed else "")
        if isinstance(self.value, str):
            return self.value
        return _TEXT.encode(self.value)


_TEXT = json.JSONEncoder(ensure_ascii=False)  # one: json.dumps with an option makes a new one per call


class Cancellation:
    """Stops one call from another thread: `cancel()` runs the stop its sandbox attached (killing the call's
    container), now or as soon as one is attached. A cancelled `ainvoke` uses it, so the tool does not go on
    with its side effects after the agent stopped waiting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop: Callable[[], None] | None = None
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            self.cancelled, stop = True, self._stop
        if stop is not None:
            stop()

    def attach(self, stop: Callable[[], None]) -> None:
        with self._lock:
            self._stop, cancelled = stop, self.cancelled
        if cancelled:
            stop()


def redact(invocation: Invocation, secrets: Collection[str]) -> Invocation:
    """The invocation with every secret replaced in its value, error, stderr, stdout and network receipt.

    A tool that prints the token it was given must not hand it to the agent (or its logs).
    """
    if not secrets:  # a tool without credentials, or with none to hide (a username is shown)
        return invocation
    redactor = Redactor.of(secrets, encoded=True)
    if not redactor:
        return invocation
    network = invocation.network
    if network is not None:  # a tool may put its token in a host name it asks for (and is refused)
        network = dataclasses.replace(
            network,
            reached=tuple(dataclasses.replace(h, host=redactor.deep(h.host)) for h in network.reached),
            refused=tuple(
                dataclasses.replace(r, host=redactor.deep(r.host), reason=redactor.deep(r.reason))
                for r in network.refused
            ),
        )
    return dataclasses.replace(
        invocation,
        value=redactor.deep(invocation.value),
        error=redactor.deep(invocation.error),
        stderr=redactor.deep(invocation.stderr),
        stdout=redactor.deep(invocation.stdout),
        network=network,
    )


def parse_output(stdout: str) -> Any:
    """stdout as JSON when it is JSON, else the text itself (trailing newline dropped)."""
    text = stdout.strip()
    if text[:1] in ("{", "[", '"') or text in ("true", "false", "null") or text[:1].isdigit() or text[:1] == "-":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return stdout.rstrip("\n")
