"""The sandbox: every tool call runs in its own hardened container.

`Sandbox` (sandbox.py) is the facade; the parts it is composed of, in the order a call meets them:
`limits` (what a call may use), `images` (tool images, named by a hash of their `context`, made by `build`),
`engine` (containers on the Docker engine, hardened; the seam a second backend implements), `egress` (the
networks whose only exit is a proxy allowing listed hosts), `pool` (containers started ahead of calls),
`warm_pool` (warm mode's long-lived servers), `background` (work done in the pauses between calls),
`launch` (one call through the launcher) and `stream` (the attach stream, read with caps). `labels` names
what the sandbox creates; `container/` holds the programs that run inside containers.

Names are loaded on first use, so importing one part does not import them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.exports import lazy

_EXPORTS = {
    "Sandbox": "runner.sandbox.sandbox",
    "Progress": "runner.sandbox.sandbox",
    "Limits": "runner.sandbox.limits",
    "SENTINEL": "runner.sandbox.limits",
    "launcher_input": "runner.sandbox.limits",
    "resolve_limits": "runner.sandbox.limits",
    "BUILD_STEP": "runner.sandbox.context",
    "FORMAT": "runner.sandbox.context",
    "image_repository": "runner.sandbox.images",
    "LABEL": "runner.sandbox.labels",
    "LABEL_FOLDER": "runner.sandbox.labels",
    "LABEL_MODE": "runner.sandbox.labels",
    "LABEL_OWNER": "runner.sandbox.labels",
    "LABEL_SANDBOX": "runner.sandbox.labels",
    "LABEL_TOOL": "runner.sandbox.labels",
    "USER": "runner.sandbox.labels",
    "owner_label": "runner.sandbox.labels",
    "BuildError": "runner.errors",
    "SandboxError": "runner.errors",
}

__all__ = [
    "BUILD_STEP",
    "FORMAT",
    "LABEL",
    "LABEL_FOLDER",
    "LABEL_MODE",
    "LABEL_OWNER",
    "LABEL_SANDBOX",
    "LABEL_TOOL",
    "SENTINEL",
    "USER",
    "BuildError",
    "Limits",
    "Progress",
    "Sandbox",
    "SandboxError",
    "image_repository",
    "launcher_input",
    "owner_label",
    "resolve_limits",
]

if TYPE_CHECKING:
    from runner.errors import BuildError, SandboxError
    from runner.sandbox.context import BUILD_STEP, FORMAT
    from runner.sandbox.images import image_repository
    from runner.sandbox.labels import (
        LABEL,
        LABEL_FOLDER,
        LABEL_MODE,
        LABEL_OWNER,
        LABEL_SANDBOX,
        LABEL_TOOL,
        USER,
        owner_label,
    )
    from runner.sandbox.limits import SENTINEL, Limits, launcher_input, resolve_limits
    from runner.sandbox.sandbox import Progress, Sandbox

__getattr__ = lazy(__name__, _EXPORTS)
