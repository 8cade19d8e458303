"""Per-patch scores from the teacher's attention (SPEC section 2).

All functions are batched: ``[B, ...]`` in, ``[B, N]`` out, on whatever device the input is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mimkit.errors import ConfigError

REDUCTIONS = ("mean", "log", "power")


def _work_dtype(x: Tensor) -> Tensor:
    # Half precision loses too much in logs and powers of small probabilities.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def cls_attention_scores(cls_attn: Tensor, reduce: str = "mean", power: float = 0.5) -> Tensor:
    """Reduce a CLS-to-patch attention ``[B, H, N]`` over heads to a score ``[B, N]``.

    ``mean``: mean over heads (AttMask). ``log``: mean over heads of ``log a`` (log of the
    geometric mean; ``a`` is clamped away from 0). ``power``: mean over heads of ``a ** power``.
    """
    if cls_attn.dim() != 3:
        raise ValueError(f"cls_attn must be [B, H, N], got shape {tuple(cls_attn.shape)}")
    a = _work_dtype(cls_attn)
    if reduce == "mean":
        return a.mean(dim=1)
    if reduce == "log":
        return a.clamp_min(torch.finfo(a.dtype).tiny).log().mean(dim=1)
    if reduce == "power":
        if not (power > 0 and math.isfinite(power)):
            raise ConfigError(f"power exponent must be > 0 and finite, got {power}")
        return a.clamp_min(0).pow(power).mean(dim=1)
    raise ConfigError(f"unknown reduction {reduce!r}: choose one of {', '.join(REDUCTIONS)}")


def rollout_scores(attentions: Sequence[Tensor]) -> Tensor:
    """Attention-rollout score ``R[:, 0, 1:]`` from per-layer maps ``[B, H, T, T]``.

    ``attentions`` is in model order (first block first). With
    ``M_l = rownorm(0.5 * mean_h A_l + 0.5 * I)`` (``readout.rollout_matrix``) and
    ``R = M_last @ ... @ M_first``, only the CLS row of ``R`` is needed, so it is computed as
    ``e_0^T M_last ... M_first``: one vector-matrix product per layer (``O(T^2)`` instead of
    the ``O(T^3)`` of the full product), and ``M_l`` itself is never formed:
    ``v @ M = 0.5 * (v / rowsum) @ mean_h A + 0.5 * (v / rowsum)``. Equal to
    ``rollout_accumulate`` over the same layers up to float rounding (tested).
    """
    if len(attentions) == 0:
        raise ValueError("rollout_scores needs at least one attention map")
    row: Tensor | None = None
    for attn in reversed(attentions):
        if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
            raise ValueError(f"attention maps must be [B, H, T, T], got {tuple(attn.shape)}")
        heads = attn.shape[1]
        summed = _work_dtype(attn).sum(dim=1)  # heads * mean_h A, [B, T, T]
        if row is None:  # e_0
            row = torch.zeros(summed.shape[:2], dtype=summed.dtype, device=summed.device)
            row[:, 0] = 1
        # Row sums of 0.5 * mean_h A + 0.5 * I: the normaliser of rollout_matrix.
        rowsum = summed.sum(dim=-1).mul_(0.5 / heads).add_(0.5)
        w = row / rowsum
        row = (w.unsqueeze(1) @ summed).squeeze(1).mul_(0.5 / heads).add_(w, alpha=0.5)
    assert row is not None
    return row[:, 1:]


def minmax_normalize(scores: Tensor) -> Tensor:
    """Rescale each row of ``[B, N]`` to [0, 1]; a constant row becomes all zeros."""
    lo = scores.amin(dim=-1, keepdim=True)
    hi = scores.amax(dim=-1, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (scores - lo) / span.clamp_min(torch.finfo(span.dtype).tiny), 0)
