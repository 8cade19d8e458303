"""The crop layout of a training batch, written down once.

Every view of a batch of ``B`` images is one crop; crops of the same kind are concatenated
along the batch dimension, crop 0's images first, so **crop ``c`` is rows ``c*B:(c+1)*B``**.
The teacher's outputs and readout, the masks and the student's patch outputs all follow it;
:class:`CropLayout` is the only place that spells it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class CropLayout:
    num_global: int
    num_local: int
    batch_size: int

    @property
    def num_crops(self) -> int:
        return self.num_global + self.num_local

    def rows(self, crop: int) -> slice:
        """Rows of crop ``crop`` in a tensor that concatenates crops along dimension 0."""
        return slice(crop * self.batch_size, (crop + 1) * self.batch_size)

    def per_crop(self, x: Tensor) -> Tensor:
        """``[C*B, ...]`` -> ``[C, B, ...]``: one slice per crop."""
        return x.reshape(x.shape[0] // self.batch_size, self.batch_size, *x.shape[1:])


@dataclass
class Crops:
    """A batch's global crops ``[G*B, C, H, W]`` and local crops ``[L*B, C, h, w]`` (or None)."""

    global_views: Tensor
    local_views: Tensor | None
    layout: CropLayout

    @classmethod
    def from_list(
        cls, crops: Sequence[Tensor], num_global: int, device: torch.device | None = None
    ) -> Crops:
        """From the data loader's list (global crops first, then local ones), each ``[B, ...]``."""
        crops = [c.to(device, non_blocking=True) for c in crops] if device else list(crops)
        layout = CropLayout(num_global, len(crops) - num_global, crops[0].shape[0])
        local = torch.cat(crops[num_global:]) if layout.num_local else None
        return cls(torch.cat(crops[:num_global]), local, layout)
