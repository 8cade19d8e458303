"""The part of a step's masks the loader workers draw: every random draw of the masks
(see :mod:`mimkit.masking.plan`).

They come from a stream of their own derived from the step seed alone, never from torch's
global RNG (drop path), so runs of different strategies with the same seed differ in their
masks only, and a resumed run, or one with another number of loader workers, replays the
same masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mimkit.masking import MaskGenerator, MaskPlan
from mimkit.train.sampling import mix_seed, step_seed
from mimkit.train.schedules import masking_started

MASK_STREAM = 1  # mixed into the step seed: the masks' own stream


@dataclass(frozen=True)
class StepMaskPlanner:
    """``planner(step, batch_size)``: that step's :class:`MaskPlan` (none before
    ``start_epoch``, iBOT's pred_start_epoch). Picklable, for the loader workers."""

    masker: MaskGenerator
    grid: int
    seed: int  # run.seed
    rank: int
    steps_per_epoch: int
    start_epoch: float

    def __call__(self, step: int, batch_size: int) -> MaskPlan:
        if not masking_started(step, self.steps_per_epoch, self.start_epoch):
            return MaskPlan.empty(self.masker.num_crops, batch_size, self.grid * self.grid)
        seed = mix_seed(MASK_STREAM, start=step_seed(self.seed, step, self.rank))
        return self.masker.plan(batch_size, self.grid, torch.Generator().manual_seed(seed))
