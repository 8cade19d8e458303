"""Data-independent masks: uniform random patches and BEiT / iBOT-style blocks."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mimkit.errors import ConfigError
from mimkit.masking.select import FLOOR_EPS, as_ratio, select_mask, uniform

MAX_FAILED_PLACEMENTS = 10


def random_mask(
    batch: int,
    num_patches: int,
    ratio: float | Tensor,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``[B, N]`` bool with exactly ``floor(ratio * N)`` patches per row, chosen uniformly."""
    keys = uniform((batch, num_patches), generator, device)
    return select_mask(keys, ratio, "high")


def reference_min_patches(gh: int, gw: int) -> int:
    """BEiT / iBOT's minimum block area: ``(min(H, W) // 3) ** 2`` patches (16 on 14x14, 4 on
    8x8, 25 on 16x16, 0 below 3x3)."""
    return (min(gh, gw) // 3) ** 2


def block_mask(
    batch: int,
    grid: int | tuple[int, int],
    ratio: float | Tensor,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    min_patches: int | None = None,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> Tensor:
    """BEiT / iBOT block masks ``[B, H, W]`` covering at most ``ratio * N`` patches.

    The budget is the real number ``ratio * N``, as in the reference: each image repeatedly
    tries a rectangle with area ``U(min_patches, budget - covered)`` (``min_patches`` defaults
    to :func:`reference_min_patches`) and aspect ratio log-uniform in ``aspect``, at a uniform
    position with height < H and width < W; a placement counts when it covers between 1 and
    ``budget - covered`` new patches. An image stops when no patch fits the budget any more
    or after 10 failed placements in a row. All images place in lock-step rounds of up to 10
    tries each, so the only Python loop is over rounds (about one per placed block).
    """
    gh, gw = (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
    if gh < 1 or gw < 1:
        raise ConfigError(f"grid must be positive, got {gh}x{gw}")
    lo_a, hi_a = float(aspect[0]), float(aspect[1])
    if not (0 < lo_a <= hi_a and math.isfinite(hi_a)):
        raise ConfigError(f"aspect range must satisfy 0 < lo <= hi, got {aspect}")
    min_p = reference_min_patches(gh, gw) if min_patches is None else int(min_patches)
    if min_p < 0:
        raise ConfigError(f"min_patches must be 0 or more, got {min_patches}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    n = gh * gw
    # The real budget r * N, not floored (the reference's rule), with mimkit's 1e-9 slack so
    # that e.g. r = 1/196 on 14x14 allows one patch, as random and attention masks do.
    budget = as_ratio(ratio, batch, device) * n + FLOOR_EPS  # [B] float64
    mask = torch.zeros(batch, gh, gw, dtype=torch.bool, device=device)
    count = torch.zeros(batch, dtype=torch.long, device=device)
    fails = torch.zeros(batch, dtype=torch.long, device=device)
    # A round with less than one patch of budget left cannot place anything: skip it.
    active = budget - count >= 1
    rows = torch.arange(gh, device=device)
    cols = torch.arange(gw, device=device)
    log_lo, log_hi = math.log(lo_a), math.log(hi_a)
    k = MAX_FAILED_PLACEMENTS
    attempt = torch.arange(k, device=device)
    while bool(active.any()):
        # Up to 10 placements per image are tried against the same mask; the first one that
        # counts is applied and the later ones are discarded. Failed tries do not change the
        # mask, so this is the sequential algorithm with fewer Python-level rounds.
        u = uniform((4, batch, k), generator, device).double()
        remaining = (budget - count)[:, None]  # [B, 1], real
        target = min_p + (remaining - min_p) * u[0]  # random.uniform(min, remaining)
        ar = torch.exp(log_lo + (log_hi - log_lo) * u[1])
        h = torch.round(torch.sqrt(target * ar)).long()  # [B, K]
        w = torch.round(torch.sqrt(target / ar)).long()
        fits = (h < gh) & (w < gw) & (h > 0) & (w > 0)
        top = torch.floor(u[2] * (gh - h + 1).clamp_min(1)).long()
        left = torch.floor(u[3] * (gw - w + 1).clamp_min(1)).long()
        # Already covered patches under each candidate, from an integral image of the mask.
        integral = torch.zeros(batch, gh + 1, gw + 1, dtype=torch.long, device=device)
        integral[:, 1:, 1:] = mask.long().cumsum(1).cumsum(2)
        integral = integral.flatten(1)
        bottom = (top + h).clamp_max(gh) * (gw + 1)
        right = (left + w).clamp_max(gw)
        top_row = top * (gw + 1)
        covered = integral.gather(1, bottom + right) - integral.gather(1, top_row + right)
        covered -= integral.gather(1, bottom + left) - integral.gather(1, top_row + left)
        new = h * w - covered  # newly covered patches, [B, K]
        ok = fits & (new > 0) & (new <= remaining) & (attempt < (k - fails)[:, None])
        ok &= active[:, None]
        hit = ok.any(1)
        first = ok.int().argmax(1, keepdim=True)  # first successful try (argmax: first max)
        t, l_ = top.gather(1, first), left.gather(1, first)  # [B, 1]
        b_, r_ = t + h.gather(1, first), l_ + w.gather(1, first)
        in_rows = (rows >= t) & (rows < b_) & hit[:, None]  # [B, gh]
        in_cols = (cols >= l_) & (cols < r_)  # [B, gw]
        mask |= in_rows[:, :, None] & in_cols[:, None, :]
        count += torch.where(hit, new.gather(1, first)[:, 0], 0)
        fails = torch.where(hit, 0, fails + k)
        active = active & (budget - count >= 1) & (fails < k)
    return mask
