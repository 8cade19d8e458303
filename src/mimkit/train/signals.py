"""A first Ctrl-C (or SIGTERM) asks the loop to stop after the current step; a second one
interrupts at once."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any


class StopFlag:
    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self, announce: Callable[[], None] = lambda: None) -> Iterator[StopFlag]:
        """Handle SIGINT/SIGTERM inside the block; ``announce`` runs on the first one."""

        def handler(signum: int, frame: Any) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            announce()

        try:
            old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: no handlers, still works
            old = {}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def saving_notice(is_main: bool) -> Callable[[], None]:
    """The ``announce`` of a loop that saves when stopped: one line, from the main process."""

    def announce() -> None:
        if is_main:
            print("\nmimkit: stopping after this step and saving a checkpoint...", flush=True)

    return announce
