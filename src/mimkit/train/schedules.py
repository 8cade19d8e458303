"""Step-indexed learning-rate and weight-decay schedules (values computed on demand, not
stored as arrays): the engine's part of a method's schedules. A method's own schedules (iBOT's
teacher momentum and temperatures) live with it (``mimkit.ibot.schedules``).

The learning rate warms up in mimkit's form or in iBOT's: linearly to its peak at step W
(``linear``) or as ``numpy.linspace(0, lr, W)``, reaching it on step W-1 (``linspace``); then
it follows a cosine to ``min_lr``. The weight decay follows a cosine from its start to its end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LR_WARMUPS = ("linear", "linspace")


def cosine(
    step: int, total: int, start: float, end: float, warmup: int = 0, warmup_from: float = 0.0
) -> float:
    """Linear warm-up from ``warmup_from`` to ``start`` over ``warmup`` steps, then cosine."""
    if step < warmup:
        return warmup_from + (start - warmup_from) * step / max(warmup, 1)
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def linspace_at(i: int, n: int, start: float, end: float) -> float:
    """``numpy.linspace(start, end, n)[i]``: ``start`` at 0, ``end`` at ``n - 1``."""
    return start if n <= 1 else start + (end - start) * i / (n - 1)


@dataclass(frozen=True)
class CosineSchedule:
    """The learning rate (already scaled by the total batch / 256) and weight decay of every
    step: warm-up then cosine, and the weight decay's own cosine (constant when
    ``weight_decay_end`` equals ``weight_decay``)."""

    steps_per_epoch: int
    epochs: int
    lr: float
    min_lr: float
    warmup_epochs: float
    weight_decay: float
    weight_decay_end: float
    lr_warmup: str = "linear"  # or "linspace" (iBOT)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def learning_rate(self, step: int) -> float:
        warm = int(self.warmup_epochs * self.steps_per_epoch)
        if self.lr_warmup == "linspace" and step < warm:
            return linspace_at(step, warm, 0.0, self.lr)
        return cosine(step, self.total_steps, self.lr, self.min_lr, warm)

    def wd(self, step: int) -> float:
        return cosine(step, self.total_steps, self.weight_decay, self.weight_decay_end)
