"""Masks for every global crop of a batch, from the teacher's readout (SPEC section 2)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mimkit.errors import ConfigError
from mimkit.masking.plan import MaskPlan
from mimkit.masking.random_block import block_mask, random_mask
from mimkit.masking.select import mask_from_ranks, rank_mask, uniform
from mimkit.masking.strategy import MaskStrategy, ScoreSpec, parse_strategy
from mimkit.models.readout import Readout, ReadoutRequest

RATIO_PER = ("image", "batch", "step")
HINT_REVEALS = ("own", "independent")


@dataclass
class MaskConfig:
    """Ratio range, how often it is drawn, the skip probability and the hint fraction.

    ``ratio``: r ~ U(lo, hi) with ``0 <= lo <= hi < 1``. ``ratio_per``: ``image`` draws r for
    every image, ``batch`` once per crop and batch, ``step`` once for all crops of the batch
    (AttMask). ``mask_prob``: probability that an image is masked at all. ``show_max``:
    hint's top fraction to reveal from. ``hint_reveal``: ``own`` reveals
    ``floor(show_max * r * N)`` with the image's own r; ``independent`` draws another ratio
    for the count, as AttMask does (see :func:`mimkit.masking.select.select_mask`).
    """

    ratio: tuple[float, float] = (0.1, 0.5)
    ratio_per: str = "image"
    mask_prob: float = 0.5
    show_max: float = 0.1
    hint_reveal: str = "own"

    def validate(self) -> MaskConfig:
        r = self.ratio
        if isinstance(r, (int, float)) or len(r) != 2:
            raise ConfigError(f"mask ratio must be a range [lo, hi], got {r!r}")
        try:
            lo, hi = float(r[0]), float(r[1])
        except (TypeError, ValueError):
            raise ConfigError(f"mask ratio must be two numbers, got {r!r}") from None
        if not (0.0 <= lo <= hi < 1.0):
            raise ConfigError(f"mask ratio range must satisfy 0 <= lo <= hi < 1, got {r!r}")
        if self.ratio_per not in RATIO_PER:
            raise ConfigError(
                f"mask ratio_per must be one of {', '.join(RATIO_PER)}, got {self.ratio_per!r}"
            )
        if self.hint_reveal not in HINT_REVEALS:
            raise ConfigError(
                f"hint_reveal must be one of {', '.join(HINT_REVEALS)}, got {self.hint_reveal!r}"
            )
        p = float(self.mask_prob)
        if not (0.0 <= p <= 1.0):
            raise ConfigError(f"mask_prob must lie in [0, 1], got {self.mask_prob!r}")
        s = float(self.show_max)
        if not (0.0 < s <= 1.0 and math.isfinite(s)):
            raise ConfigError(f"show_max must lie in (0, 1], got {self.show_max!r}")
        return self


class MaskGenerator:
    """Draws one ``[B, G, G]`` bool mask per global crop.

    The teacher ran on the global crops concatenated along the batch (crop 0's images first),
    so readout tensors have ``num_crops * B`` rows and crop ``c`` uses rows ``c*B:(c+1)*B``.
    """

    def __init__(
        self, strategies: Sequence[MaskStrategy | str], config: MaskConfig, depth: int
    ) -> None:
        if not strategies:
            raise ConfigError("no mask strategy given")
        self.depth = depth
        self.config = config.validate()
        self.strategies = [
            (parse_strategy(s, depth) if isinstance(s, str) else s.resolve(depth))
            for s in strategies
        ]

    @property
    def num_crops(self) -> int:
        return len(self.strategies)

    def readout_request(self) -> ReadoutRequest:
        """What the teacher must report: the union over the attention-guided strategies."""
        return ReadoutRequest.union(
            s.score.readout_request(self.depth)
            for s in self.strategies
            if s.attention_guided and s.score is not None
        )

    def scores(
        self, readout: Readout, crop: int, batch_size: int, spec: ScoreSpec | None = None
    ) -> Tensor:
        """Crop ``crop``'s score ``[B, N]``: ``spec`` if given, else that crop's strategy's."""
        if spec is None:
            spec = self.strategies[crop].score
            if spec is None:
                raise ValueError(
                    f"crop {crop}'s strategy {self.strategies[crop].text!r} has no score"
                )
        spec = spec.resolve(self.depth)
        sliced = _slice_readout(readout, crop * batch_size, (crop + 1) * batch_size)
        return spec.compute(sliced)

    def draw_ratios(
        self, batch_size: int, generator: torch.Generator | None, device: torch.device
    ) -> Tensor:
        lo, hi = (float(x) for x in self.config.ratio)
        n = batch_size if self.config.ratio_per == "image" else 1
        u = uniform((n,), generator, device).double()
        return (lo + (hi - lo) * u).expand(batch_size)

    def _crop_ratios(
        self, hint: bool, batch_size: int, generator: torch.Generator | None, device: torch.device
    ) -> tuple[Tensor, Tensor | None]:
        """The ratio ``[B]`` of one crop and, for hint with ``hint_reveal: independent``, the
        independent ratio its reveal count comes from."""
        ratio = self.draw_ratios(batch_size, generator, device)
        independent = hint and self.config.hint_reveal == "independent"
        return ratio, self.draw_ratios(batch_size, generator, device) if independent else None

    def plan(
        self, batch_size: int, grid: int, generator: torch.Generator | None = None
    ) -> MaskPlan:
        """Everything that needs no teacher, on the CPU: per crop, in order, the ratios, the
        random or block mask, or for attention-guided crops the masked ranks
        (:func:`~mimkit.masking.select.rank_mask`: hint's reveals included), and the skips."""
        cpu, n = torch.device("cpu"), grid * grid
        hints = [s.mode == "hint" for s in self.strategies]
        # ratio_per step: one draw (and one reveal draw) shared by every crop, as AttMask.
        shared = (
            self._crop_ratios(any(hints), batch_size, generator, cpu)
            if self.config.ratio_per == "step"
            else None
        )
        parts: list[tuple[Tensor, Tensor, Tensor]] = []
        for c, strategy in enumerate(self.strategies):
            ratio, reveal = shared or self._crop_ratios(hints[c], batch_size, generator, cpu)
            if strategy.mode == "random":
                mask = random_mask(batch_size, n, ratio, generator, cpu)
            elif strategy.mode == "block":
                mask = block_mask(batch_size, grid, ratio, generator, cpu).reshape(batch_size, n)
            else:
                mask = rank_mask(
                    ratio, batch_size, n, strategy.mode, show_max=self.config.show_max,
                    generator=generator, reveal_ratio=reveal,
                )  # fmt: skip
            keep = uniform((batch_size,), generator, cpu) < self.config.mask_prob
            parts.append((ratio.contiguous(), keep, mask & keep[:, None]))
        ratios, keeps, masks = (torch.stack(p) for p in zip(*parts, strict=True))
        return MaskPlan(ratios, keeps, masks, masks.sum(2))

    def complete(
        self,
        plan: MaskPlan,
        readout: Readout | None,
        batch_size: int,
        grid: int,
        device: torch.device | str | None = None,
    ) -> list[Tensor]:
        """One bool mask ``[B, G, G]`` per global crop from ``plan``: the data-independent
        crops as planned; the attention-guided ones put the planned ranks on the patches
        ordered by the teacher's scores. No random draw happens here."""
        device = _pick_device(readout, device)
        n = grid * grid
        masks = []
        for c, strategy in enumerate(self.strategies):
            if not strategy.attention_guided:
                m = plan.masks[c].to(device, non_blocking=True)
            elif not bool(plan.keep[c].any()):  # the plan is on the CPU: no sync
                m = torch.zeros(batch_size, n, dtype=torch.bool, device=device)
            else:
                if readout is None:
                    raise ValueError(f"mask strategy {strategy.text!r} needs the teacher's readout")
                s = self.scores(readout, c, batch_size)
                if s.shape != (batch_size, n):
                    raise ValueError(
                        f"scores of shape {tuple(s.shape)} do not match a batch of {batch_size} "
                        f"on a {grid}x{grid} grid"
                    )
                m = mask_from_ranks(s, plan.masks[c], strategy.mode)
            masks.append(m.reshape(batch_size, grid, grid))
        return masks

    def generate(
        self,
        readout: Readout | None,
        batch_size: int,
        grid: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> list[Tensor]:
        """One bool mask ``[B, G, G]`` per global crop (True = replaced by the mask token):
        :meth:`plan` from ``generator``, then :meth:`complete`."""
        plan = self.plan(batch_size, grid, generator)
        return self.complete(plan, readout, batch_size, grid, device)


def _pick_device(readout: Readout | None, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if readout is not None:
        for t in (*readout.cls_attn.values(), *readout.rollout.values()):
            return t.device
    return torch.device("cpu")


def _slice_readout(readout: Readout, start: int, stop: int) -> Readout:
    def cut(t: Tensor) -> Tensor:
        if t.shape[0] < stop:
            raise ValueError(
                f"readout has {t.shape[0]} rows, need rows {start}:{stop} for this crop"
            )
        return t[start:stop]

    return Readout(
        cls_attn={k: cut(v) for k, v in readout.cls_attn.items()},
        rollout={k: cut(v) for k, v in readout.rollout.items()},
    )
