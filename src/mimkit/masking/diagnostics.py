"""What a strategy's masks do, measured on tensors (docs/method.md, sections "Mask
diagnostics" and "Learned scores"): object coverage, overlap with another strategy's masks
against chance, the entropy of an attention score, and how well a score orders the real
per-patch losses. Pure functions, batched over images ``[B, N]``, on any device; the
model-side diagnostics (hardness) are in :mod:`mimkit.ibot.mask_diagnostics`.
"""

from __future__ import annotations

import math
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor


def object_patches(pixels: Tensor, patch_size: int, threshold: float) -> Tensor:
    """``[B, N]`` bool: the patches of ``pixels`` ``[B, C, H, W]`` (values in [0, 1]) whose
    mean pixel, over the patch and the channels, exceeds ``threshold``."""
    means = F.avg_pool2d(pixels.float().mean(dim=1, keepdim=True), patch_size)
    return (means > threshold).flatten(1)


def object_coverage(masks: Tensor, objects: Tensor) -> tuple[float, float]:
    """``(coverage, chance)``: the share of all masked patches that lie on the object, and
    the share random masks of the same counts would give in expectation (each image's object
    share weighted by its masked count). NaN when nothing is masked."""
    masks, objects = masks.flatten(1).bool(), objects.flatten(1).bool()
    counts = masks.sum(dim=1).double()
    total = float(counts.sum())
    if total == 0:
        return math.nan, math.nan
    covered = float((masks & objects).sum())
    share = objects.double().mean(dim=1)
    return covered / total, float((counts * share).sum()) / total


def same_count_random(masks: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniformly random masks ``[B, N]`` with, per image, as many masked patches as
    ``masks`` has (drawn on the CPU from ``generator``, returned on ``masks``' device)."""
    masks = masks.flatten(1)
    b, n = masks.shape
    noise = torch.rand(b, n, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1).to(masks.device)
    return ranks < masks.sum(dim=1, keepdim=True)


def top_k_masks(scores: Tensor, counts: Tensor) -> Tensor:
    """``[B, N]`` bool: per image the ``counts[i]`` patches of highest score (AttMask-High
    at a given count; ties broken by patch index)."""
    order = scores.float().argsort(dim=1, descending=True, stable=True)
    ranks = order.argsort(dim=1)
    return ranks < counts.reshape(-1, 1).to(ranks.device)


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """Per image ``|a & b| / |a | b|`` ``[B]`` (NaN where both are empty)."""
    a, b = a.flatten(1).bool(), b.flatten(1).bool()
    inter = (a & b).sum(dim=1).double()
    union = (a | b).sum(dim=1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.nan)


def mean_iou(a: Tensor, b: Tensor) -> Tensor:
    """:func:`mask_iou` averaged over the images where either masks anything (0 when none
    does), without reading anything back to the host: for the training step's log."""
    iou = mask_iou(a, b)
    used = ~iou.isnan()
    return torch.where(used, iou, 0.0).sum() / used.sum().clamp_min(1)


@cache
def chance_iou(k: int, n: int) -> float:
    """The expected IoU of two independent uniformly random ``k``-subsets of ``n`` patches:
    their intersection is hypergeometric, ``P(i) = C(k, i) C(n - k, k - i) / C(n, k)``, and
    the IoU is ``i / (2k - i)``. (About ``k / (2n - k)``; the expected share of one set that
    the other covers, ``|a & b| / k``, is exactly ``k / n``.)"""
    if not 0 < k <= n:
        return math.nan
    total = math.comb(n, k)
    return sum(
        math.comb(k, i) * math.comb(n - k, k - i) / total * i / (2 * k - i)
        for i in range(max(0, 2 * k - n), k + 1)
    )


def normalized_entropy(scores: Tensor) -> Tensor:
    """Per row of non-negative ``scores`` ``[B, N]`` (renormalised to sum to 1), the entropy
    divided by ``log N``: 1 for a uniform score, 0 when one patch holds everything."""
    p = scores.double().clamp_min(0)
    p = p / p.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    h = -(torch.where(p > 0, p * p.log(), 0.0)).sum(dim=1)
    return h / math.log(p.shape[1])


MIN_RANKED = 3  # fewer values than this give no rank correlation


def _ranks(values: Tensor, valid: Tensor) -> Tensor:
    """0-based ranks within each row among the valid cells (invalid cells rank last)."""
    filled = torch.where(valid, values.float(), torch.inf)
    return filled.argsort(dim=1).argsort(dim=1).float()


def spearman_per_image(x: Tensor, y: Tensor, valid: Tensor) -> Tensor:
    """Spearman's rank correlation of ``x`` and ``y`` ``[I, W]`` over each row's valid cells,
    averaged over the rows with at least 3 of them (0 when none has). Ties are ranked in
    an arbitrary order."""
    rx, ry = _ranks(x, valid), _ranks(y, valid)
    n = valid.sum(1, keepdim=True).clamp_min(1)
    w = valid.float()
    dx = (rx - (rx * w).sum(1, keepdim=True) / n) * w
    dy = (ry - (ry * w).sum(1, keepdim=True) / n) * w
    denom = (dx.square().sum(1) * dy.square().sum(1)).sqrt()
    rho = (dx * dy).sum(1) / denom.clamp_min(torch.finfo(denom.dtype).tiny)
    used = (valid.sum(1) >= MIN_RANKED) & (denom > 0)
    return torch.where(used, rho, 0.0).sum() / used.sum().clamp_min(1)
