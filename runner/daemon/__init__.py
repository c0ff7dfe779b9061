"""The local pocket process: `pocket invoke` hands its call to a process of this user that keeps the runner
loaded (and its tools' containers started), instead of importing the runner in every command.

`protocol` (where it listens, what it is keyed by, the frames), `client` (the command's side: imports
almost nothing), `server` (the long-lived process: `python -m runner.daemon.server`).
"""

from __future__ import annotations

from runner.exports import lazy

__getattr__ = lazy(__name__, {"Call": "runner.daemon.protocol", "invoke": "runner.daemon.client"})
