"""Band-pass ("green") noise masks, ColorMAE's data-independent family (docs/method.md,
section "Masks"), made on the fly on the patch grid: white noise filtered by a difference of
Gaussians, the patches with the largest values masked. No pattern file is read."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mimkit.masking.select import select_mask, uniform

# Gaussian widths in patches: the filtered noise's power peaks at about 0.35-0.45 cycles per
# patch on the integer grid (blobs every 2-3 patches; measured in tests/masking).
DEFAULT_SIGMAS = (0.5, 1.0)


def dog_kernel(sigma1: float, sigma2: float, device: torch.device | str | None = None) -> Tensor:
    """``G(sigma1) - G(sigma2)`` on a ``(2R+1)^2`` grid, ``R = ceil(3 sigma2)``, each Gaussian
    normalised to sum 1, so that the kernel sums to 0 (no constant component)."""
    radius = math.ceil(3 * sigma2)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    d2 = x[:, None] ** 2 + x[None, :] ** 2

    def gauss(s: float) -> Tensor:
        g = torch.exp(-d2 / (2 * s * s))
        return g / g.sum()

    return gauss(sigma1) - gauss(sigma2)


def green_noise(
    batch: int,
    grid: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    sigmas: tuple[float, float] = DEFAULT_SIGMAS,
) -> Tensor:
    """``[B, G, G]`` band-pass noise: uniform white noise on a margin-padded grid, filtered by
    :func:`dog_kernel` with 'valid' borders, so that every patch sees a full neighbourhood
    (a window of a stationary field, as ColorMAE's random crops of a large pattern)."""
    kernel = dog_kernel(*sigmas, device=device)
    r = kernel.shape[0] // 2
    white = uniform((batch, 1, grid + 2 * r, grid + 2 * r), generator, device) - 0.5
    return F.conv2d(white, kernel[None, None]).squeeze(1)


def green_mask(
    batch: int,
    grid: int,
    ratio: float | Tensor,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    sigmas: tuple[float, float] = DEFAULT_SIGMAS,
) -> Tensor:
    """``[B, N]`` bool: the ``floor(ratio * N)`` patches of largest :func:`green_noise`."""
    noise = green_noise(batch, grid, generator, device, sigmas)
    return select_mask(noise.flatten(1), ratio, "high")
