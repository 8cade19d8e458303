"""Turn per-patch scores into boolean masks: high / low / hint (docs/method.md, section "Masks").

Everything is vectorised over the batch: one partial sort (top-k) per row, and random sort
keys for hint's uniform draw.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mimkit.errors import ConfigError

SELECTIONS = ("high", "low", "hint")

# floor(r * N) is computed in float64 with this slack, so that e.g. 0.3 * 10 gives 3, not 2.
FLOOR_EPS = 1e-9


def uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None
) -> Tensor:
    """``U[0, 1)`` float32 on ``device``, drawn from ``generator`` wherever that lives."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if generator is not None and generator.device.type != device.type:
        return torch.rand(shape, generator=generator, device=generator.device).to(device)
    return torch.rand(shape, generator=generator, device=device)


def as_ratio(ratio: float | Tensor, batch: int, device: torch.device) -> Tensor:
    """A float or ``[B]`` ratio as a float64 ``[B]`` tensor, checked to lie in [0, 1].

    A tensor is checked where it lives before it moves, so a CPU ratio costs no device sync.
    """
    if isinstance(ratio, Tensor):
        r = ratio.detach().to(dtype=torch.float64).reshape(-1)
        if r.numel() == 1:
            r = r.expand(batch)
        if r.numel() != batch:
            raise ValueError(f"ratio has {r.numel()} entries for a batch of {batch}")
        if r.numel() and not bool(((r >= 0) & (r <= 1)).all()):
            raise ConfigError(
                f"mask ratio must lie in [0, 1], got {r.min().item()}..{r.max().item()}"
            )
        return r.to(device)
    r = float(ratio)
    if not (0.0 <= r <= 1.0):
        raise ConfigError(f"mask ratio must lie in [0, 1], got {ratio}")
    return torch.full((batch,), r, dtype=torch.float64, device=device)


def floor_count(fraction: Tensor, n: int) -> Tensor:
    """``floor(fraction * n)`` as int64, robust to float rounding (0.5 * N gives exactly N/2)."""
    return torch.floor(fraction.to(torch.float64) * n + FLOOR_EPS).long().clamp_(0, n)


def _scatter_rows(n: int, index: Tensor, values: Tensor) -> Tensor:
    """A ``[B, n]`` bool that is ``values[b, j]`` at column ``index[b, j]`` and False elsewhere."""
    out = torch.zeros(index.shape[0], n, dtype=torch.bool, device=index.device)
    return out.scatter_(1, index, values)


def select_mask(
    scores: Tensor,
    ratio: float | Tensor,
    mode: str = "high",
    *,
    show_max: float = 0.1,
    generator: torch.Generator | None = None,
    reveal_ratio: float | Tensor | None = None,
) -> Tensor:
    """Boolean mask ``[B, N]`` (True = masked) from scores ``[B, N]``.

    ``high``/``low``: exactly ``k = floor(ratio * N)`` highest / lowest-scoring patches per row.
    ``hint``: the ``high`` mask, then patches revealed uniformly without replacement from the
    top ones. By default (mimkit) ``floor(show_max * ratio * N)`` of the top
    ``min(k, floor(show_max * N))`` patches, all masked. With ``reveal_ratio`` (AttMask's
    rule) ``floor(show_max * reveal_ratio * N)`` of the top ``floor(show_max * N)``, masked or
    not: a drawn patch that was not masked stays unmasked (this happens when r < show_max).
    ``ratio`` and ``reveal_ratio`` are floats or ``[B]`` tensors. Ties go to an arbitrary (but
    deterministic) patch.

    Which *ranks* are masked depends on the ratios and random draws only
    (:func:`rank_mask`, computed where the ratio lives); the scores only order the patches
    (:func:`mask_from_ranks`).
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, N], got shape {tuple(scores.shape)}")
    b, n = scores.shape
    ranks = rank_mask(
        ratio, b, n, mode, show_max=show_max, generator=generator, reveal_ratio=reveal_ratio
    )
    return mask_from_ranks(scores, ranks, mode)


def rank_mask(
    ratio: float | Tensor,
    batch: int,
    n: int,
    mode: str = "high",
    *,
    show_max: float = 0.1,
    generator: torch.Generator | None = None,
    reveal_ratio: float | Tensor | None = None,
) -> Tensor:
    """``[B, N]`` bool: whether the patch of rank ``j`` of each row is masked (rank 0 is the
    highest score, the lowest for ``low``), by :func:`select_mask`'s rules. It needs no
    scores, so it can be drawn ahead, e.g. in a data-loader worker; it lives on the ratio's
    device (the CPU for a float)."""
    if mode not in SELECTIONS:
        raise ConfigError(f"unknown selection {mode!r}: choose one of {', '.join(SELECTIONS)}")
    if not (0.0 < show_max <= 1.0 and math.isfinite(show_max)):
        raise ConfigError(f"show_max must lie in (0, 1], got {show_max}")
    device = ratio.device if isinstance(ratio, Tensor) else torch.device("cpu")
    r = as_ratio(ratio, batch, device)
    k = floor_count(r, n)  # [B]
    top = floor_count(torch.full_like(r, show_max), n)
    if mode != "hint":
        pool, n_reveal = k.new_zeros(batch), k.new_zeros(batch)
    elif reveal_ratio is None:
        pool = torch.minimum(k, top)
        # <= pool already, since show_max <= 1 and r <= 1; the clamp guards float rounding.
        n_reveal = torch.minimum(floor_count(show_max * r, n), pool)
    else:
        pool = top
        n_reveal = torch.minimum(
            floor_count(show_max * as_ratio(reveal_ratio, batch, device), n), top
        )
    width = int(torch.maximum(k, pool).max()) if batch else 0
    pos = torch.arange(width, device=device).expand(batch, width)  # the ranks
    keep = pos < k[:, None]
    r_max = int(n_reveal.max()) if batch else 0
    if r_max > 0:
        keys = uniform((batch, width), generator, device)
        keys = torch.where(pos < pool[:, None], keys, 2.0)  # only the pool can be drawn
        # The n_reveal smallest keys: a uniform draw without replacement from the pool.
        drawn = torch.topk(keys, r_max, dim=1, largest=False, sorted=True).indices
        reveal = _scatter_rows(width, drawn, pos[:, :r_max] < n_reveal[:, None])
        keep = keep & ~reveal
    return torch.cat([keep, keep.new_zeros(batch, n - width)], dim=1)


def mask_from_ranks(scores: Tensor, ranks: Tensor, mode: str = "high") -> Tensor:
    """``[B, N]`` mask on ``scores``' device: the patch of rank ``j`` is masked where
    ``ranks[:, j]`` (see :func:`rank_mask`). Only the ranks up to the last masked one are
    sorted, a partial sort; with CPU ``ranks`` nothing waits for the device."""
    if scores.shape != ranks.shape:
        raise ValueError(f"ranks {tuple(ranks.shape)} do not match scores {tuple(scores.shape)}")
    used = ranks.any(0).nonzero()
    width = int(used[-1]) + 1 if used.numel() else 0
    # Only the best `width` patches of each row matter: a partial sort is enough.
    order = torch.topk(scores, width, dim=1, largest=(mode != "low"), sorted=True).indices
    keep = ranks[:, :width].to(scores.device, non_blocking=True)
    return _scatter_rows(scores.shape[1], order, keep)
