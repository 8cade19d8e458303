"""The ``masking`` section of a pretraining config: which patches of the global crops are
masked (see :mod:`mimkit.masking`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mimkit.config import check_field, choice, ranged
from mimkit.errors import ConfigError
from mimkit.masking.curriculum import RAMP_SHAPES, Ramp

RATIO_PER = ("image", "batch", "step")
HINT_REVEALS = ("own", "independent")


@dataclass
class MaskingConfig:
    """``strategies``: one ``MODE[@SCORE]`` per global crop, or one for all. ``ratio``: r ~
    U(lo, hi) with ``0 <= lo <= hi < 1``. ``ratio_per``: ``image`` draws r for every image,
    ``batch`` once per crop and batch, ``step`` once for all crops of the batch (AttMask).
    ``mask_prob``: probability that an image is masked at all. ``show_max``: hint's top
    fraction to reveal from. ``hint_reveal``: ``own`` reveals ``floor(show_max * r * N)`` with
    the image's own r; ``independent`` draws another ratio for the count, as AttMask does
    (see :func:`mimkit.masking.select.select_mask`). ``start_epoch``: no masks before this
    (fractional) epoch, iBOT's ``pred_start_epoch``. ``alpha`` and ``alpha_schedule``: the
    ``mix`` mode's share of score-ranked patches, from ``alpha[0]`` to ``alpha[1]`` over
    training (constant, linear, cosine or step; values in [-1, 1], negative ones rank from the
    lowest score), for a ``mix`` strategy without its own (HPM: linear from 0 to 0.5).
    """

    strategies: list[str] = field(default_factory=lambda: ["block"])
    ratio: tuple[float, float] = ranged((0.1, 0.5), "[0, 1)")
    ratio_per: str = choice("image", RATIO_PER)
    mask_prob: float = ranged(0.5, "[0, 1]")
    show_max: float = ranged(0.1, "(0, 1]")
    hint_reveal: str = choice("own", HINT_REVEALS)
    start_epoch: float = ranged(0.0, ">= 0")
    alpha: tuple[float, float] = ranged((0.0, 0.5), "[-1, 1]")  # mix: start and end (HPM)
    alpha_schedule: str = choice("linear", RAMP_SHAPES)

    def alpha_ramp(self) -> Ramp:
        """``mix``'s default schedule, checked (ConfigError naming the field)."""
        a0, a1 = (float(a) for a in self.alpha)
        return Ramp(a0, a1, self.alpha_schedule).check("masking.alpha", -1.0, 1.0)

    def validate(self) -> MaskingConfig:
        """ConfigError naming the first bad field (strategies are checked against a backbone
        by ``mimkit.ibot.validation``); the mask generator calls it, so a config built in
        code is checked too."""
        r = self.ratio
        if isinstance(r, (int, float)) or len(r) != 2:
            raise ConfigError(f"mask ratio must be a range [lo, hi], got {r!r}")
        try:
            lo, hi = float(r[0]), float(r[1])
        except (TypeError, ValueError):
            raise ConfigError(f"mask ratio must be two numbers, got {r!r}") from None
        if not (0.0 <= lo <= hi < 1.0):
            raise ConfigError(f"mask ratio range must satisfy 0 <= lo <= hi < 1, got {r!r}")
        for f in dataclasses.fields(self):
            check_field(f"masking.{f.name}", getattr(self, f.name), f)
        self.alpha_ramp()
        return self
