"""Multi-crop augmentation of a whole batch at once with tensor operations (``data.batch_augment``).

For data sets whose images share one size and sit in an array (the embedded set, IDX,
CIFAR). Every image gets its own draws, following :class:`MultiCropTransform`: torchvision's
RandomResizedCrop box rule, horizontal flip, colour jitter (brightness, contrast, saturation,
hue in a random order), grayscale, Gaussian blur and, on global crops 2..g, solarisation, with
the same probabilities and ranges. What differs from the per-image PIL pipeline: the
arithmetic is float rather than 8-bit at every step, crops are resampled by bicubic grid
sampling (no antialiasing when a crop shrinks), and the blur is an exact Gaussian with
reflected borders (torchvision's tensor blur) rather than PIL's box approximation.
Single-channel sources stay single-channel until the end: saturation, hue and grayscale
leave a gray image unchanged, so they are skipped there.

Why: on 28 px images the per-image PIL pipeline costs about as much CPU as a third of the
training step; here a batch of views costs a few milliseconds (BENCHMARKS.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from mimkit.data.transforms import MultiCropSpec, blur_sigma

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's and torchvision's grayscale
CROP_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect ratios
CROP_TRIES = 10  # RandomResizedCrop's attempts before its centre-crop fallback
SOLARIZE_THRESHOLD = 128 / 255


def uniform(n: int, lo: float, hi: float, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def coin(n: int, p: float, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g) < p


def draw_box_sizes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    g: torch.Generator,
    *,
    strict: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(h, w, found)`` of ``n`` boxes: up to 10 tries of an area fraction in ``scale`` and a
    log-uniform aspect ratio in ``ratio``, the first that fits the image (with ``strict``,
    that is strictly smaller than it, RandomErasing's rule); ``found`` is false where none
    did (``h``, ``w`` are then meaningless)."""
    area = height * width
    target = area * torch.empty(n, CROP_TRIES).uniform_(*scale, generator=g)
    log_r = torch.empty(n, CROP_TRIES).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    max_h, max_w = (height - 1, width - 1) if strict else (height, width)
    ok = (w > 0) & (w <= max_w) & (h > 0) & (h <= max_h)
    first = ok.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits
    return h.gather(1, first)[:, 0], w.gather(1, first)[:, 0], ok.any(1)


def crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    g: torch.Generator,
    ratio: tuple[float, float] = CROP_RATIO,
) -> Tensor:
    """``[n, 4]`` boxes (top, left, h, w) drawn by RandomResizedCrop's rule: up to 10 tries of
    an area fraction in ``scale`` and a log-uniform aspect ratio, else the centre crop of the
    largest box whose ratio fits ``ratio``."""
    h, w, found = draw_box_sizes(n, height, width, scale, ratio, g)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    w = torch.where(found, w, torch.tensor(float(fw)))
    h = torch.where(found, h, torch.tensor(float(fh)))
    top = torch.floor(torch.rand(n, generator=g) * (height - h + 1))
    left = torch.floor(torch.rand(n, generator=g) * (width - w + 1))
    top = torch.where(found, top, torch.floor((height - h) / 2))
    left = torch.where(found, left, torch.floor((width - w) / 2))
    return torch.stack([top, left, h, w], dim=1)


def resized_crops(images: Tensor, boxes: Tensor, size: int, flip: Tensor) -> Tensor:
    """Each image's box resampled to ``size`` x ``size`` (bicubic, pixel centres aligned as
    PIL's resize), mirrored where ``flip``; values clamped to [0, 1]."""
    n, c, height, width = images.shape
    top, left, h, w = boxes.to(images.dtype).unbind(1)
    sign = torch.where(flip, -1.0, 1.0).to(images.dtype)
    # affine_grid's sampling points (align_corners=False) for a scale-and-shift map, built by
    # broadcasting: its batched matmul cost more than the resampling itself.
    out_coords = (torch.arange(size, dtype=images.dtype) + 0.5) * (2 / size) - 1
    gx = (w / width * sign).view(n, 1, 1) * out_coords.view(1, 1, size)
    gx = gx + ((2 * left + w) / width - 1).view(n, 1, 1)
    gy = (h / height).view(n, 1, 1) * out_coords.view(1, size, 1)
    gy = gy + ((2 * top + h) / height - 1).view(n, 1, 1)
    grid = torch.stack(torch.broadcast_tensors(gx, gy), dim=-1)
    out = F.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.clamp_(0, 1)


def to_gray(x: Tensor) -> Tensor:
    """``[n, 1, H, W]`` luma of ``[n, C, H, W]`` images (C = 1 is returned as is)."""
    if x.shape[1] == 1:
        return x
    weights = x.new_tensor(LUMA).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def per_image(f: Tensor) -> Tensor:
    return f.view(-1, 1, 1, 1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    return (x * per_image(factor)).clamp(0, 1)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    mean = to_gray(x).mean(dim=(1, 2, 3), keepdim=True)
    f = per_image(factor)
    return (f * x + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    f = per_image(factor)
    return (f * x + (1 - f) * to_gray(x)).clamp(0, 1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate each RGB image's hue by ``shift`` (a fraction of the circle) in HSV space."""
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    delta = v - x.min(1).values
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    d = delta.clamp_min(1e-12)
    rc, gc, bc = (v - r) / d, (v - g) / d, (v - b) / d
    h = torch.where(v == r, bc - gc, torch.where(v == g, 2 + rc - bc, 4 + gc - rc))
    h = torch.where(delta > 0, (h / 6) % 1.0, torch.zeros_like(h))
    h = (h + shift.view(-1, 1, 1)) % 1.0
    sector = torch.floor(h * 6)
    f = h * 6 - sector
    sector = sector.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    values = torch.stack([v, q, p, t])  # which of them is R, G, B in each of the 6 sectors:
    picks = x.new_tensor([[0, 1, 2, 2, 3, 0], [3, 0, 0, 1, 2, 2], [2, 2, 3, 0, 0, 1]]).long()
    rgb = [values.gather(0, picks[c][sector].unsqueeze(0))[0] for c in range(3)]
    return torch.stack(rgb, dim=1).clamp(0, 1)


def gaussian_blur(x: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Each image blurred by a Gaussian of its own ``sigma`` (kernel 2 * radius + 1, borders
    reflected, as torchvision's tensor blur)."""
    n, c, height, width = x.shape
    radius = max(1, min(radius, height - 1, width - 1))
    k = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (k / sigma.to(x.dtype).view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, dim=0)
    size = 2 * radius + 1
    y = F.pad(x, (radius,) * 4, mode="reflect").reshape(1, n * c, height + 2 * radius, -1)
    y = F.conv2d(y, kernel.view(n * c, 1, 1, size), groups=n * c)
    y = F.conv2d(y, kernel.view(n * c, 1, size, 1), groups=n * c)
    return y.view(n, c, height, width)


def where_images(sel: Tensor, new: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``x`` with the images ``sel`` replaced by ``new(x[sel])`` (computed on those only)."""
    if not bool(sel.any()):
        return x
    x = x.clone()
    x[sel] = new(x[sel])
    return x


class BatchMultiCrop(MultiCropSpec):
    """Uint8 images ``[B, H, W, C]`` (C = 1 or 3) and a generator -> the list of ``num_global``
    global crops then ``num_local`` local crops, each ``[B, 3, size, size]`` and normalised:
    what :class:`MultiCropTransform` gives per image, collated."""

    def _build(self) -> None:
        self.mean_t = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std_t = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: Tensor, g: torch.Generator) -> list[Tensor]:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"expected uint8 images [B, H, W, 1 or 3], got {tuple(images.shape)}")
        x = images.permute(0, 3, 1, 2).float().div_(255)
        blur1, blur2, blur_local = self.augment.blur_prob
        gs, ls = self.global_size, self.local_size
        crops = [self._view(x, gs, self.global_scale, blur1, False, g)]
        for _ in range(self.num_global - 1):
            crops.append(self._view(x, gs, self.global_scale, blur2, True, g))
        for _ in range(self.num_local):
            crops.append(self._view(x, ls, self.local_scale, blur_local, False, g))
        return crops

    def _view(
        self,
        x: Tensor,
        size: int,
        scale: tuple[float, float],
        blur_prob: float,
        solarize: bool,
        g: torch.Generator,
    ) -> Tensor:
        aug, n = self.augment, x.shape[0]
        boxes = crop_boxes(n, x.shape[2], x.shape[3], scale, g)
        y = resized_crops(x, boxes, size, coin(n, aug.flip_prob, g))
        y = self._jitter(y, g)
        if y.shape[1] == 3 and aug.grayscale_prob > 0:
            y = where_images(
                coin(n, aug.grayscale_prob, g), lambda z: to_gray(z).expand(-1, 3, -1, -1), y
            )
        if blur_prob > 0:
            lo, hi = blur_sigma(size, aug.blur_sigma_scaled)
            sel, sigma = coin(n, blur_prob, g), uniform(n, lo, hi, g)
            y = where_images(sel, lambda z: gaussian_blur(z, sigma[sel], math.ceil(3 * hi)), y)
        if solarize and aug.solarize_prob > 0:
            sel = coin(n, aug.solarize_prob, g).view(-1, 1, 1, 1)
            y = torch.where(sel & (y >= SOLARIZE_THRESHOLD), 1 - y, y)
        y = y.expand(-1, 3, -1, -1)  # single-channel sources become RGB, as PIL's convert
        return (y - self.mean_t) / self.std_t

    def _jitter(self, y: Tensor, g: torch.Generator) -> Tensor:
        """ColorJitter(0.4s, 0.4s, 0.2s, 0.1s) with probability ``jitter_prob``, each image's
        operations in its own random order."""
        aug, n = self.augment, y.shape[0]
        s = aug.jitter_strength
        if s <= 0 or aug.jitter_prob <= 0:
            return y
        applied = coin(n, aug.jitter_prob, g)
        ops: list[tuple[Callable[[Tensor, Tensor], Tensor], Tensor]] = [
            (adjust_brightness, uniform(n, max(0.0, 1 - 0.4 * s), 1 + 0.4 * s, g)),
            (adjust_contrast, uniform(n, max(0.0, 1 - 0.4 * s), 1 + 0.4 * s, g)),
        ]
        if y.shape[1] == 3:
            hue = min(0.5, 0.1 * s)
            ops += [
                (adjust_saturation, uniform(n, max(0.0, 1 - 0.2 * s), 1 + 0.2 * s, g)),
                (adjust_hue, uniform(n, -hue, hue, g)),
            ]
        order = torch.rand(n, len(ops), generator=g).argsort(dim=1)
        for position in range(len(ops)):
            for k, (op, factor) in enumerate(ops):
                sel = applied & (order[:, position] == k)
                y = where_images(sel, lambda z, op=op, f=factor, sel=sel: op(z, f[sel]), y)
        return y
