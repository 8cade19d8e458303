"""Masks for every global crop of a batch, from the teacher's readout (docs/method.md,
section "Masks")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mimkit.data.crops import CropLayout
from mimkit.errors import ConfigError
from mimkit.masking.config import MaskingConfig
from mimkit.masking.modes import CropPlan
from mimkit.masking.plan import MaskPlan
from mimkit.masking.score_kinds import ScoreSpec, readout_request
from mimkit.masking.select import uniform
from mimkit.masking.strategy import MaskStrategy, finish_crop, parse_strategy, plan_crop
from mimkit.models.readout import Readout, ReadoutRequest


class MaskGenerator:
    """Draws one ``[B, G, G]`` bool mask per global crop.

    The teacher ran on the global crops concatenated along the batch (``mimkit.data.crops``), so
    crop ``c``'s strategy reads the readout rows of crop ``c``'s images.
    """

    def __init__(
        self, strategies: Sequence[MaskStrategy | str], config: MaskingConfig, depth: int
    ) -> None:
        if not strategies:
            raise ConfigError("no mask strategy given")
        self.depth = depth
        self.config = config.validate()
        alpha = self.config.alpha_ramp()
        self.strategies = [
            (parse_strategy(s, depth) if isinstance(s, str) else s.resolve(depth)).with_alpha(alpha)
            for s in strategies
        ]

    @property
    def num_crops(self) -> int:
        return len(self.strategies)

    def readout_request(self) -> ReadoutRequest:
        """What the teacher must report: the union over the attention-guided strategies."""
        return readout_request((s.score for s in self.strategies), self.depth)

    def layout(self, batch_size: int) -> CropLayout:
        return CropLayout(len(self.strategies), 0, batch_size)

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
        return spec.resolve(self.depth).compute(readout.rows(self.layout(batch_size).rows(crop)))

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
        self,
        batch_size: int,
        grid: int,
        generator: torch.Generator | None = None,
        progress: float = 0.0,
    ) -> MaskPlan:
        """Everything that needs no teacher, on the CPU: per crop, in order, the ratios, its
        :func:`~mimkit.masking.strategy.plan_crop` (a random, block or green mask, or the
        masked ranks of a scored crop, hint's reveals included, and the keys of mix and
        sample) and the skips. ``progress``: of training, in [0, 1] (mix's schedule)."""
        cpu = torch.device("cpu")
        hints = [s.mode == "hint" for s in self.strategies]
        # ratio_per step: one draw (and one reveal draw) shared by every crop, as AttMask.
        shared = (
            self._crop_ratios(any(hints), batch_size, generator, cpu)
            if self.config.ratio_per == "step"
            else None
        )
        parts: list[tuple[Tensor, ...]] = []
        for c, strategy in enumerate(self.strategies):
            ratio, reveal = shared or self._crop_ratios(hints[c], batch_size, generator, cpu)
            crop = plan_crop(
                strategy, batch_size, grid, ratio, generator, cpu, self.config.show_max, reveal,
                progress,
            )  # fmt: skip
            keep = uniform((batch_size,), generator, cpu) < self.config.mask_prob
            keys = crop.keys if crop.keys is not None else torch.zeros(crop.masks.shape)
            counts = torch.where(keep, crop.counts, 0)
            parts.append((ratio.contiguous(), keep, crop.masks & keep[:, None], counts, keys))
        ratios, keeps, masks, counts, keys = (torch.stack(p) for p in zip(*parts, strict=True))
        return MaskPlan(ratios, keeps, masks, counts, keys)

    def complete(
        self,
        plan: MaskPlan,
        readout: Readout | None,
        batch_size: int,
        grid: int,
        device: torch.device | str | None = None,
    ) -> list[Tensor]:
        """One bool mask ``[B, G, G]`` per global crop from ``plan``
        (:func:`~mimkit.masking.strategy.finish_crop`): the data-independent crops as planned,
        the attention-guided ones with the planned ranks put on the patches ordered by the
        teacher's scores. No random draw happens here."""
        device = _pick_device(readout, device)
        layout = self.layout(batch_size)
        return [
            finish_crop(
                strategy,
                CropPlan(plan.masks[c], plan.keys[c], plan.counts[c]),
                readout.rows(layout.rows(c)) if readout is not None else None,
                grid,
                device,
            )
            for c, strategy in enumerate(self.strategies)
        ]

    def generate(
        self,
        readout: Readout | None,
        batch_size: int,
        grid: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        progress: float = 0.0,
    ) -> list[Tensor]:
        """One bool mask ``[B, G, G]`` per global crop (True = replaced by the mask token):
        :meth:`plan` from ``generator``, then :meth:`complete`."""
        plan = self.plan(batch_size, grid, generator, progress)
        return self.complete(plan, readout, batch_size, grid, device)


def _pick_device(readout: Readout | None, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if readout is not None:
        scores = readout.patch_scores.values()
        for t in (*readout.cls_attn.values(), *readout.rollout.values(), *scores):
            return t.device
    return torch.device("cpu")
