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

from mimkit.ibot.config import PretrainConfig
from mimkit.ibot.schedules import masking_started
from mimkit.masking import (
    MaskGenerator,
    MaskPlan,
    MaskStrategy,
    ScoreSpec,
    parse_score,
    parse_strategy,
)
from mimkit.train.sampling import mix_seed, step_seed

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
    total_steps: int  # of the whole run: mix's alpha schedule runs over it

    def __call__(self, step: int, batch_size: int) -> MaskPlan:
        if not masking_started(step, self.steps_per_epoch, self.start_epoch):
            return MaskPlan.empty(self.masker.num_crops, batch_size, self.grid * self.grid)
        seed = mix_seed(MASK_STREAM, start=step_seed(self.seed, step, self.rank))
        generator = torch.Generator().manual_seed(seed)
        return self.masker.plan(batch_size, self.grid, generator, step / self.total_steps)


def contrastive_score(
    cfg: PretrainConfig, strategies: list[MaskStrategy], depth: int
) -> ScoreSpec | None:
    """The score the dense contrastive term picks patches by, when it is on and a strategy's
    own score does not serve: ``loss.contrastive_score``, else ``raw:-1`` as soon as one crop
    has a random or block mask."""
    if cfg.loss.lambda3 <= 0:
        return None
    spec = cfg.loss.contrastive_score
    if spec is None and not all(s.attention_guided for s in strategies):
        spec = "raw:-1"
    return parse_score(spec, depth) if spec else None


def score_head_kinds(cfg: PretrainConfig) -> tuple[str, ...]:
    """The learned scores (``pred``, ``adv``) that the strategies or the contrastive term
    read: each needs its head in the networks."""
    specs = [parse_strategy(text).score for text in cfg.masking.strategies]
    if cfg.loss.lambda3 > 0 and cfg.loss.contrastive_score:
        specs.append(parse_score(cfg.loss.contrastive_score))
    return tuple(sorted({s.kind for s in specs if s is not None and s.learned}))
