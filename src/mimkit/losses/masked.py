"""The masked patches the patch term reads, as flat rows, so that the heads only ever see them.

The patch term of iBOT averages, per image, the cross-entropy over that image's masked
patches and then averages over images (an image without masked patches contributes zero).
Every unmasked patch has weight zero, so the student and teacher prototype layers need only
run on the masked rows: ``sum(weight * ce)`` over those rows is the same number.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MaskedPatches:
    """``rows [M]``: flat indices into the ``[I * N]`` patch tokens of ``I`` images (row-major,
    so image ``i``'s patch ``j`` is row ``i * N + j``); ``weight [M]``: ``1 / (I * max(1, c_i))``
    with ``c_i`` the number of masked patches of the row's image."""

    rows: Tensor
    weight: Tensor

    @property
    def count(self) -> int:
        return int(self.rows.shape[0])


def masked_patches(masks: Tensor, total: int | None = None) -> MaskedPatches:
    """Rows and weights of the True entries of ``masks [I, N]`` (or ``[I, H, W]``).

    ``total``: the number of True entries when the host already knows it (from a
    :class:`~mimkit.masking.MaskPlan`); then accelerators need no device-to-host copy.
    Without it, the count is read from the tensor (a host synchronisation on accelerators).
    On the CPU, where reading it is free, a ``total`` that disagrees is an error.
    """
    masks = masks.flatten(1)
    images, n = masks.shape
    flat = masks.reshape(-1)
    if total is None or flat.device.type == "cpu":
        rows = flat.nonzero().squeeze(1)
        if total is not None and rows.shape[0] != total:
            raise RuntimeError(
                f"the plan counted {total} masked patches, the masks have {rows.shape[0]}"
            )
    else:
        rows = torch.nonzero_static(flat, size=total).squeeze(1)
    per_image = 1.0 / (masks.sum(1).clamp(min=1).to(torch.float32) * images)
    return MaskedPatches(rows, per_image[rows // n])


@dataclass(frozen=True)
class ImageSlots:
    """The masked rows laid out image by image: row ``r`` goes to ``[image[r], slot[r]]`` of an
    ``[images, width]`` table, ``width`` being the most masked patches of one image. Per-image
    statistics (pairs of masked patches, rank correlations) are then batched operations."""

    rows: Tensor  # [M]: the flat rows (image * N + patch)
    image: Tensor  # [M]
    slot: Tensor  # [M]
    images: int
    width: int

    def pad(self, values: Tensor, fill: float = 0.0) -> Tensor:
        """``values [M]`` (one per masked row) as an ``[images, width]`` table."""
        out = values.new_full((self.images, self.width), fill)
        return out.index_put((self.image, self.slot), values)

    @property
    def valid(self) -> Tensor:
        """``[images, width]`` bool: which cells hold a masked row."""
        return self.pad(torch.ones_like(self.image, dtype=torch.bool), False)


def image_slots(rows: Tensor, n: int, counts: Tensor, width: int | None = None) -> ImageSlots:
    """:class:`ImageSlots` of ``rows`` (sorted flat indices into ``[I * N]`` patches, as
    :func:`masked_patches` gives them) with ``counts [I]`` masked patches per image.
    ``width``: the largest count when the host knows it (from a mask plan); without it it is
    read from ``counts`` (a host synchronisation on accelerators)."""
    counts = counts.to(rows.device)
    if width is None:
        width = int(counts.max()) if counts.numel() else 0
    image = torch.div(rows, n, rounding_mode="floor")
    starts = counts.cumsum(0) - counts
    slot = torch.arange(rows.shape[0], device=rows.device) - starts[image]
    return ImageSlots(rows, image, slot, int(counts.shape[0]), width)
