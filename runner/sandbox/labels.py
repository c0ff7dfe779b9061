"""The labels on everything the sandbox creates, the user tools run as, and the owner label that tells
whether the runner that created a container or network still lives (so a later runner removes what a dead
one left, and never what a live one uses)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

LABEL = "pocket-runner"  # every container and image we create carries `pocket-runner=1`
LABEL_OWNER = "pocket-runner.owner"  # hostname:pid:process-start-ticks of the runner that created it
LABEL_SANDBOX = "pocket-runner.sandbox"  # which Sandbox object (one process may hold several)
LABEL_TOOL = "pocket-runner.tool"
LABEL_FOLDER = "pocket-runner.folder"  # on images: a hash of the tool folder's path, so rebuilds replace their own
LABEL_MODE = "pocket-runner.mode"
USER = "65534:65534"  # nobody:nogroup


def _process_start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def owner_label() -> str:
    """hostname:pid:start — enough to tell later whether the runner that made a container still lives."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start_ticks(os.getpid()) or 0}"


def owner_alive(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine's (or an unreadable) label: never ours to judge
    ticks = _process_start_ticks(int(pid_text))
    return ticks is not None and (start in ("0", "") or ticks == start)
