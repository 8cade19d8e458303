"""iBOT's own schedules beside the engine's learning rate and weight decay: the teacher's EMA
momentum (cosine to 1) and the teacher temperatures' warm-up, and when masking starts.

The temperatures rise per step (``step``) or per epoch, held for the whole epoch (``epoch``,
iBOT's form). The patch temperature's warm-up starts with the masks (``masking.start_epoch``),
as iBOT's does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mimkit.train.schedules import CosineSchedule, cosine, linspace_at

TEMP_WARMUPS = ("step", "epoch")


def linear_warmup(epoch: float, warmup_epochs: float, start: float, end: float) -> float:
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return end
    return start + (end - start) * epoch / warmup_epochs


def epoch_warmup(epoch: int, warmup_epochs: int, start: float, end: float) -> float:
    """iBOT's per-epoch warm-up: ``linspace(start, end, W)[epoch]`` for the first W epochs
    (so ``end`` is reached on epoch W-1), then ``end``."""
    return end if epoch >= warmup_epochs else linspace_at(epoch, warmup_epochs, start, end)


def masking_started(step: int, steps_per_epoch: int, start_epoch: float) -> bool:
    """Whether step ``step`` draws masks: from epoch ``start_epoch`` on (iBOT's
    ``pred_start_epoch``). A fractional start counts in steps: masks begin at the first step
    ``s`` with ``s / steps_per_epoch >= start_epoch``; an integer start is an epoch boundary."""
    return step >= math.ceil(start_epoch * steps_per_epoch - 1e-9)


@dataclass(frozen=True, kw_only=True)
class Schedules(CosineSchedule):
    """The engine's LR/WD schedule plus the teacher's momentum and temperatures."""

    momentum_teacher: float
    teacher_temp: float
    warmup_teacher_temp: float
    teacher_patch_temp: float
    warmup_teacher_patch_temp: float
    warmup_teacher_temp_epochs: float
    teacher_temp_warmup: str = "step"  # or "epoch" (iBOT)
    mask_start_epoch: float = 0.0  # the patch temperature warms up from here

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
