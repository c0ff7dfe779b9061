"""One call through the launcher (`container/launch.sh`, or `container/prestart.py`): the per-call nonce, the
tool's environment as `export` lines, a sentinel line with the body's length and the body written on the attach
stream (or the prestarted launcher's channel); stdout and stderr read with byte caps until the launcher reports
the tool's exit status on both streams (marked with the nonce), so a call returns without waiting for the engine
to notice the exit. A monotonic deadline kills the container."""

from __future__ import annotations

import enum
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.sandbox.engine import Engine, Started
from runner.sandbox.limits import Limits, launcher_input
from runner.sandbox.stream import Output


class Ending(enum.Enum):
    """How the exchange with the launcher ended."""

    EXITED = "eof"  # the tool exited (its exit code may still be unknown)
    TIMEOUT = "timeout"
    STOPPED = "stop"  # it printed far past the output limit and was killed


@dataclass(frozen=True)
class Launched:
    """What a call in a started container produced."""

    ending: Ending
    exit_code: int | None
    stdout: str
    stderr: str
    truncated: bool  # output past the limit was dropped
    reported: bool  # the launcher reported the exit status: the tool ended, not its container


_SHELL_SYNTAX = set("|&;<>()$`\\\"'*?[]#~=%{}!\n")
PYTHONS = ("python", "python3")


def python_command(run: str) -> tuple[str, ...] | None:
    """The container command that runs `entrypoint.run` through `container/prestart.py`, with the interpreter
    started before the call, when `run` is plainly `python FILE ARGS...` or `python -m MODULE ARGS...` (no
    shell syntax, no interpreter options); else None: launch.sh runs it with /bin/sh."""
    if _SHELL_SYNTAX & set(run):
        return None
    words = run.split()
    if len(words) < 2 or words[0] not in PYTHONS:
        return None
    if words[1] == "-m":
        return (words[0], "/pocket/prestart.py", *words[1:]) if len(words) > 2 else None
    if words[1].startswith("-") or not words[1].endswith(".py"):
        return None
    return (words[0], "/pocket/prestart.py", *words[1:])


def stdin_for(environment: Mapping[str, str], body: Any) -> tuple[bytes, str]:
    """The launcher's input for one call, and its nonce. Raises PocketError for an environment it cannot pass."""
    nonce = uuid.uuid4().hex
    return launcher_input(environment, json.dumps(body).encode(), nonce), nonce


def launch(engine: Engine, started: Started, stdin: bytes, nonce: str, limits: Limits) -> Launched:
    deadline = time.monotonic() + limits.time_left
    output = Output(limits.output_limit, nonce)
    stream = started.transport
    state = "timeout"
    if stream.send(stdin, deadline, output.on_frame):  # stdin stays open: the body is framed by its length
        if not output.finished:
            state = stream.read_until(deadline, output.on_frame)
    if output.finished:
        state = "eof"
    elif state != "eof":
        started.close()  # first: dockerd blocks a kill while a stream it copies to is not read
        engine.kill(started.id)
    exit_code = output.exit_code
    reported = exit_code is not None
    if exit_code is None and state != "timeout":
        exit_code = engine.exit_code(started.id)
    return Launched(
        Ending(state), exit_code, bytes(output.stdout).decode("utf-8", "replace"), output.stderr_text(),
        output.dropped > 0, reported,
    )  # fmt: skip
