"""The part of a batch's masks that does not need the teacher, drawn ahead on the CPU.

Random, block and green masks depend on nothing but random draws, and so does every crop's
ratio, skip decision and, for the scored crops, which score *ranks* are masked (hint's
reveals included) and the uniform keys that ``mix`` and ``sample`` rank the other patches
by: all of it can be drawn in the data-loader workers, next to the crops, and arrive with the
batch. On the device, after the teacher's forward pass, the scored crops only sort their
patches (:meth:`mimkit.masking.MaskGenerator.complete`).
Since every image's masked count is known here, on the host, the step needs no device sync
to gather the masked patches.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class MaskPlan(NamedTuple):
    """Per global crop ``c`` and image ``b`` (a named tuple, so that loaders pin and move it):

    - ``ratio [C, B]`` float64: the drawn mask ratio;
    - ``keep [C, B]`` bool: whether the image is masked at all (``mask_prob``);
    - ``masks [C, B, N]`` bool, skips applied: the finished masks of the data-independent
      crops (random, block, green); for the scored crops the masked *ranks* (column ``j``:
      the patch with the ``j``-th highest score, lowest for ``low``), put on patches later
      (for ``mix`` only the ranks it forces);
    - ``counts [C, B]`` int64: every image's exact number of masked patches, all crops;
    - ``keys [C, B, N]`` float32: the uniform draws that ``mix`` and ``sample`` crops rank
      patches by (zeros for the other crops).
    """

    ratio: Tensor
    keep: Tensor
    masks: Tensor
    counts: Tensor
    keys: Tensor

    @property
    def total(self) -> int:
        """Masked patches in the whole batch (free: the counts live on the CPU)."""
        return int(self.counts.sum())

    @property
    def widest(self) -> int:
        """The most masked patches of one image (free, as :attr:`total`)."""
        return int(self.counts.max()) if self.counts.numel() else 0

    @classmethod
    def empty(cls, crops: int, batch_size: int, num_patches: int) -> MaskPlan:
        """No masks at all (e.g. before ``masking.start_epoch``)."""
        return cls(
            torch.zeros(crops, batch_size, dtype=torch.float64),
            torch.zeros(crops, batch_size, dtype=torch.bool),
            torch.zeros(crops, batch_size, num_patches, dtype=torch.bool),
            torch.zeros(crops, batch_size, dtype=torch.long),
            torch.zeros(crops, batch_size, num_patches),
        )
