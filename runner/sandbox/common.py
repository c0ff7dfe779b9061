"""What the sandbox's modules share: the labels on what it creates, the user tools run as."""

from __future__ import annotations

LABEL = "pocket-runner"  # every container and image we create carries `pocket-runner=1`
LABEL_OWNER = "pocket-runner.owner"  # hostname:pid:process-start-ticks of the runner that created it
LABEL_SANDBOX = "pocket-runner.sandbox"  # which Sandbox object (one process may hold several)
LABEL_TOOL = "pocket-runner.tool"
LABEL_FOLDER = "pocket-runner.folder"  # on images: a hash of the tool folder's path, so rebuilds replace their own
LABEL_MODE = "pocket-runner.mode"
USER = "65534:65534"  # nobody:nogroup
