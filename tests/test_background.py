"""Background work waits for a pause between calls: it starts as the last call ends, not when its limit runs out."""

from __future__ import annotations

import threading
import time

from runner.sandbox.background import Background


def _wait_in_thread(background: Background, limit: float, settle: float) -> tuple[threading.Thread, list[float]]:
    ended: list[float] = []

    def wait() -> None:
        background.wait_quiet(limit, settle)
        ended.append(time.monotonic())

    thread = threading.Thread(target=wait)
    thread.start()
    return thread, ended


def test_work_waiting_for_a_pause_starts_when_the_last_call_ends():
    background = Background(engine=None)  # type: ignore[arg-type]  # only removals use the engine
    try:
        with background.call():
            with background.call():  # nested, as a Pocket's call around its sandbox's
                thread, ended = _wait_in_thread(background, limit=30, settle=0)
                time.sleep(0.3)
            time.sleep(0.3)
            assert not ended, "background work started while a call was running"
            call_ended = time.monotonic()
        thread.join(10)
        assert ended and ended[0] - call_ended < 5, "background work waited for its limit, not for the call's end"
    finally:
        background.close()


def test_work_that_asks_for_a_settled_pause_waits_that_long_after_the_call():
    background = Background(engine=None)  # type: ignore[arg-type]
    try:
        with background.call():
            thread, ended = _wait_in_thread(background, limit=30, settle=0.5)
            time.sleep(0.2)
            call_ended = time.monotonic()
        thread.join(10)
        assert ended and 0.5 <= ended[0] - call_ended < 5
    finally:
        background.close()
