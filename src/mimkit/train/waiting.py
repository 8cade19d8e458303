"""How long the training loop sits waiting for its data."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class WaitClock:
    """Iterates over ``items`` and adds up the seconds spent blocked in ``next()``.

    In the training loop that is the time the step waits for the data loader: near zero when
    the loader workers keep ahead of the step, the whole loading time with no workers.
    """

    def __init__(self) -> None:
        self.waited = 0.0

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        it = iter(items)
        while True:
            start = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                self.waited += time.perf_counter() - start
            yield item
