"""Where a Pocket's progress lines go: the callback it was given, and listeners that come and go while it runs.

The sandbox says what it does (an image build, line by line; a base image pulled) through one callable,
fixed when it is created. `ProgressLines` is that callable: the MCP server listens while it serves, to turn
the lines into progress notifications of the calls waiting for them, without the sandbox knowing about MCP.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

Progress = Callable[[str], None]


class ProgressLines:
    """Calls the owner's callback, then every listener, with each line; from any thread."""

    def __init__(self, callback: Progress | None = None):
        self._callback = callback
        self._listeners: tuple[Progress, ...] = ()
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        if self._callback is not None:
            self._callback(line)
        for listener in self._listeners:  # a tuple replaced whole: no lock needed to read it
            listener(line)

    @contextlib.contextmanager
    def listening(self, listener: Progress) -> Iterator[None]:
        """`listener` gets every line said until the block ends."""
        with self._lock:
            self._listeners = (*self._listeners, listener)
        try:
            yield
        finally:
            with self._lock:
                self._listeners = tuple(each for each in self._listeners if each is not listener)
