"""Values that move over training, as a function of its progress ``p = step / total_steps``
(docs/method.md, section "Masks"): the ``mix`` mode's alpha, the adversarial policy's lambda.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mimkit.errors import ConfigError

RAMP_SHAPES = ("constant", "linear", "cosine", "step")


@dataclass(frozen=True)
class Ramp:
    """From ``start`` at ``p = 0`` to ``end`` at ``p = 1``: ``constant`` (``start`` only, so
    ``end`` must equal it), ``linear``, ``cosine`` (a half cosine, flat at both ends) or
    ``step`` (``start`` before half-way, ``end`` from there on)."""

    start: float
    end: float
    shape: str = "linear"

    def check(self, name: str, lo: float, hi: float) -> Ramp:
        """ConfigError naming ``name`` when the shape is unknown or a value leaves [lo, hi]."""
        if self.shape not in RAMP_SHAPES:
            raise ConfigError(
                f"{name} schedule must be one of {', '.join(RAMP_SHAPES)}, got {self.shape!r}"
            )
        for v in (self.start, self.end):
            if not (math.isfinite(v) and lo <= v <= hi):
                raise ConfigError(f"{name} must lie in [{lo:g}, {hi:g}], got {v!r}")
        if self.shape == "constant" and self.start != self.end:
            raise ConfigError(
                f"{name}: a constant schedule has one value, got {self.start:g} and "
                f"{self.end:g} (use linear, cosine or step to move between them)"
            )
        return self

    def at(self, progress: float) -> float:
        p = min(max(float(progress), 0.0), 1.0)
        if self.shape == "constant":
            return self.start
        if self.shape == "step":
            return self.start if p < 0.5 else self.end
        if self.shape == "cosine":
            p = 0.5 * (1.0 - math.cos(math.pi * p))
        return self.start + (self.end - self.start) * p

    def __str__(self) -> str:
        if self.shape == "constant":
            return f"{self.start:g}"
        return f"{self.start:g}:{self.end:g}:{self.shape}"
