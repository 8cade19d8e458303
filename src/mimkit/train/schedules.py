"""Step-indexed schedules (values are computed on demand, not stored as arrays)."""

from __future__ import annotations

import math
from dataclasses import dataclass


def cosine(
    step: int, total: int, start: float, end: float, warmup: int = 0, warmup_from: float = 0.0
) -> float:
    """Linear warm-up from ``warmup_from`` to ``start`` over ``warmup`` steps, then cosine."""
    if step < warmup:
        return warmup_from + (start - warmup_from) * step / max(warmup, 1)
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def linear_warmup(epoch: float, warmup_epochs: float, start: float, end: float) -> float:
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return end
    return start + (end - start) * epoch / warmup_epochs


def masking_started(step: int, steps_per_epoch: int, start_epoch: float) -> bool:
    """Whether step ``step`` draws masks: from epoch ``start_epoch`` on (iBOT's
    ``pred_start_epoch``). A fractional start counts in steps: masks begin at the first step
    ``s`` with ``s / steps_per_epoch >= start_epoch``; an integer start is an epoch boundary."""
    return step >= math.ceil(start_epoch * steps_per_epoch - 1e-9)


@dataclass(frozen=True)
class Schedules:
    steps_per_epoch: int
    epochs: int
    lr: float  # already scaled by total batch / 256
    min_lr: float
    warmup_epochs: float
    weight_decay: float
    weight_decay_end: float
    momentum_teacher: float
    teacher_temp: float
    warmup_teacher_temp: float
    teacher_patch_temp: float
    warmup_teacher_patch_temp: float
    warmup_teacher_temp_epochs: float

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def learning_rate(self, step: int) -> float:
        warm = int(self.warmup_epochs * self.steps_per_epoch)
        return cosine(step, self.total_steps, self.lr, self.min_lr, warm)

    def wd(self, step: int) -> float:
        return cosine(step, self.total_steps, self.weight_decay, self.weight_decay_end)

    def momentum(self, step: int) -> float:
        return cosine(step, self.total_steps, self.momentum_teacher, 1.0)

    def teacher_temps(self, step: int) -> tuple[float, float]:
        e, w = self.epoch_of(step), self.warmup_teacher_temp_epochs
        return (
            linear_warmup(e, w, self.warmup_teacher_temp, self.teacher_temp),
            linear_warmup(e, w, self.warmup_teacher_patch_temp, self.teacher_patch_temp),
        )
