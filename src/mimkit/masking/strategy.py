"""Mask strategy strings ``MODE[:OPTIONS][@SCORE]``: a mode of :data:`~mimkit.masking.modes.MODES`
and, for a scored mode, a score of :data:`~mimkit.masking.score_kinds.SCORE_KINDS`; a new
strategy is one entry in one of those tables.

Examples: ``random``, ``block``, ``green``, ``high`` (= ``high@raw:-1``, AttMask-High),
``high@raw:11``, ``hint@rollout:8-11``, ``low@power:-1:0.5``, ``high@log:4``,
``high@multi:4+8+11``, ``mix@pred`` (HPM), ``mix:0:1:cosine@raw``, ``sample:0.5@log``,
``sample@adv``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from mimkit.errors import ConfigError
from mimkit.masking.curriculum import Ramp
from mimkit.masking.modes import MODES, CropPlan, Draw, ModeOptions
from mimkit.masking.score_kinds import DEFAULT_SCORE, ScoreSpec, score_from_text
from mimkit.masking.select import as_ratio
from mimkit.models.readout import Readout


@dataclass(frozen=True)
class MaskStrategy:
    """One global crop's masking: a mode with its options and, for a scored mode, the score
    it ranks by."""

    mode: str
    score: ScoreSpec | None
    text: str
    options: ModeOptions = ModeOptions()

    @property
    def attention_guided(self) -> bool:
        """Whether it ranks patches by a score of the teacher's pass (attention or learned)."""
        return MODES[self.mode].scored

    @property
    def label(self) -> str:
        """``high@raw:5``-style text (layers as they are; ``random`` / ``block`` alone)."""
        mode = self.mode + MODES[self.mode].describe(self.options)
        return mode if self.score is None else f"{mode}@{self.score}"

    def resolve(self, depth: int) -> MaskStrategy:
        if self.score is None:
            return self
        return replace(self, score=self.score.resolve(depth, self.text))

    def with_alpha(self, default: Ramp) -> MaskStrategy:
        """``mix`` without its own schedule takes ``default`` (the config's)."""
        if self.mode != "mix" or self.options.alpha is not None:
            return self
        return replace(self, options=replace(self.options, alpha=default))


def plan_crop(
    strategy: MaskStrategy,
    batch: int,
    grid: int,
    ratio: float | Tensor,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    show_max: float = 0.1,
    reveal_ratio: float | Tensor | None = None,
    progress: float = 0.0,
) -> CropPlan:
    """One crop's plan on ``device``: every random draw of its mask, nothing that needs the
    teacher (see :class:`Mode`). ``progress``: of training, for ``mix``'s schedule."""
    device = torch.device(device)
    r = as_ratio(ratio, batch, device)
    draw = Draw(
        batch, grid, r, generator, device, show_max, reveal_ratio, strategy.options, progress
    )
    return MODES[strategy.mode].plan(draw)


def finish_crop(
    strategy: MaskStrategy,
    planned: CropPlan,
    readout: Readout | None,
    grid: int,
    device: torch.device | str | None = None,
) -> Tensor:
    """One crop's ``[B, G, G]`` bool mask (True = replaced by the mask token) on ``device``
    from its plan and, for scored modes, the readout of that crop's images only. No random
    draw happens here."""
    batch = planned.masks.shape[0]
    device = torch.device(device) if device is not None else planned.masks.device
    mode = MODES[strategy.mode]
    if mode.finish is None:
        m = planned.masks.to(device, non_blocking=True)
    elif not bool(planned.counts.any()):  # nothing masked (all skipped): no ranking, no readout
        m = torch.zeros(batch, grid * grid, dtype=torch.bool, device=device)
    else:
        if readout is None or strategy.score is None:
            raise ValueError(f"mask strategy {strategy.text!r} needs the teacher's readout")
        scores = strategy.score.compute(readout)
        if scores.shape != (batch, grid * grid):
            raise ValueError(
                f"scores of shape {tuple(scores.shape)} do not match a batch of {batch} "
                f"on a {grid}x{grid} grid"
            )
        m = mode.finish(scores.detach(), planned, strategy.options).to(device)
    return m.reshape(batch, grid, grid)


def mask_crop(
    strategy: MaskStrategy,
    readout: Readout | None,
    batch: int,
    grid: int,
    ratio: float | Tensor,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    show_max: float = 0.1,
    reveal_ratio: float | Tensor | None = None,
    progress: float = 0.0,
) -> Tensor:
    """One crop's ``[B, G, G]`` bool mask in one go: :func:`plan_crop` on ``device``, then
    :func:`finish_crop`. Training does the same in two places: the plan in the loader
    workers, the rest after the teacher's forward pass (:class:`mimkit.masking.MaskGenerator`)."""
    planned = plan_crop(
        strategy, batch, grid, ratio, generator, device, show_max, reveal_ratio, progress
    )
    return finish_crop(strategy, planned, readout, grid, device)


def parse_strategy(text: str, depth: int | None = None) -> MaskStrategy:
    """Parse ``MODE[:OPTIONS][@SCORE]``; with ``depth``, check and resolve the layers."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"empty mask strategy {text!r}")
    clean = text.strip()
    mode_text, sep, score_text = clean.partition("@")
    mode, *args = (part.strip() for part in mode_text.split(":"))
    mode = mode.lower()
    if mode not in MODES:
        raise ConfigError(
            f"unknown mask mode {mode!r} in {text!r}: choose one of {', '.join(MODES)}"
        )
    record = MODES[mode]
    if record.parse is None and args:
        raise ConfigError(f"mask mode {mode!r} takes no options, got {text!r}")
    options = record.parse(args, text) if record.parse is not None else ModeOptions()
    if not record.scored:
        if sep:
            raise ConfigError(f"mask mode {mode!r} takes no @SCORE, got {text!r}")
        return MaskStrategy(mode, None, clean, options)
    if sep and not score_text.strip():
        raise ConfigError(f"missing score after '@' in {text!r}")
    score = score_from_text(score_text.strip() if sep else DEFAULT_SCORE, text)
    allowed = score.record.modes
    if allowed is not None and mode not in allowed:
        raise ConfigError(
            f"score {score.kind!r} goes with mode {' or '.join(allowed)} only, got {text!r}"
        )
    strategy = MaskStrategy(mode, score, clean, options)
    return strategy.resolve(depth) if depth is not None else strategy


def parse_strategies(
    texts: Sequence[str] | str, num_global_crops: int, depth: int
) -> list[MaskStrategy]:
    """One strategy per global crop: one string applies to all crops, else one per crop."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if num_global_crops < 1:
        raise ConfigError(f"need at least one global crop, got {num_global_crops}")
    if not texts:
        raise ConfigError("no mask strategy given")
    if len(texts) == 1:
        texts = texts * num_global_crops
    elif len(texts) != num_global_crops:
        raise ConfigError(f"{len(texts)} mask strategies given for {num_global_crops} global crops")
    return [parse_strategy(t, depth) for t in texts]
