"""Step-indexed schedules (values are computed on demand, not stored as arrays).

Two warm-ups come in mimkit's form and in iBOT's: the learning rate rises linearly to its
peak at step W (``linear``) or as ``numpy.linspace(0, lr, W)``, reaching it on step W-1
(``linspace``); the teacher temperatures rise per step (``step``) or per epoch, held for the
whole epoch (``epoch``). The patch temperature's warm-up starts with the masks
(``masking.start_epoch``), as iBOT's does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LR_WARMUPS = ("linear", "linspace")
TEMP_WARMUPS = ("step", "epoch")


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


def linspace_at(i: int, n: int, start: float, end: float) -> float:
    """``numpy.linspace(start, end, n)[i]``: ``start`` at 0, ``end`` at ``n - 1``."""
    return start if n <= 1 else start + (end - start) * i / (n - 1)


def epoch_warmup(epoch: int, warmup_epochs: int, start: float, end: float) -> float:
    """iBOT's per-epoch warm-up: ``linspace(start, end, W)[epoch]`` for the first W epochs
    (so ``end`` is reached on epoch W-1), then ``end``."""
    return end if epoch >= warmup_epochs else linspace_at(epoch, warmup_epochs, start, end)


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
    lr_warmup: str = "linear"  # or "linspace" (iBOT)
    teacher_temp_warmup: str = "step"  # or "epoch" (iBOT)
    mask_start_epoch: float = 0.0  # the patch temperature warms up from here

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

    def momentum(self, step: int) -> float:
        return cosine(step, self.total_steps, self.momentum_teacher, 1.0)

    def teacher_temps(self, step: int) -> tuple[float, float]:
        """(CLS, patch) teacher temperatures at ``step``."""
        w, start = self.warmup_teacher_temp_epochs, self.mask_start_epoch
        cls_from, cls_to = self.warmup_teacher_temp, self.teacher_temp
        patch_from, patch_to = self.warmup_teacher_patch_temp, self.teacher_patch_temp
        if self.teacher_temp_warmup == "epoch":
            epoch, we, mask_epoch = step // self.steps_per_epoch, round(w), math.ceil(start)
            patch = (
                patch_from
                if epoch < mask_epoch
                else epoch_warmup(epoch - mask_epoch, we, patch_from, patch_to)
            )
            return epoch_warmup(epoch, we, cls_from, cls_to), patch
        e = self.epoch_of(step)
        patch = patch_from if e < start else linear_warmup(e - start, w, patch_from, patch_to)
        return linear_warmup(e, w, cls_from, cls_to), patch
