"""Per-patch scores from the teacher's CLS attention (docs/method.md, section "Masks").
Attention rollout is accumulated by the backbone itself (``models/readout.py``).

All functions are batched: ``[B, ...]`` in, ``[B, N]`` out, on whatever device the input is.
"""

from __future__ import annotations

import math

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


def minmax_normalize(scores: Tensor) -> Tensor:
    """Rescale each row of ``[B, N]`` to [0, 1]; a constant row becomes all zeros."""
    lo = scores.amin(dim=-1, keepdim=True)
    hi = scores.amax(dim=-1, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (scores - lo) / span.clamp_min(torch.finfo(span.dtype).tiny), 0)
