"""Diagnostics of learned masks, logged during training (docs/method.md, section "Learned
scores"): how well a score orders the real per-patch losses, and how much a mask overlaps
another strategy's."""

from __future__ import annotations

import torch
from torch import Tensor

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


def top_counts(scores: Tensor, counts: Tensor) -> Tensor:
    """``[B, N]`` bool: each row's ``counts[b]`` highest scores, by a full sort on the scores'
    device (no host read, unlike the planned selections' partial sort)."""
    order = scores.argsort(dim=1, descending=True)
    first = torch.arange(scores.shape[1], device=scores.device) < counts.to(scores.device)[:, None]
    return torch.zeros_like(first).scatter_(1, order, first)


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of two bool masks ``[B, ...]``, per image, averaged over the
    images where either masks anything."""
    a, b = a.flatten(1), b.flatten(1)
    union = (a | b).sum(1)
    inter = (a & b).sum(1)
    used = union > 0
    iou = inter.float() / union.clamp_min(1).float()
    return torch.where(used, iou, 0.0).sum() / used.sum().clamp_min(1)
