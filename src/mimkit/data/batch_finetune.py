"""Fine-tuning's augmentation for a whole batch at once with tensor operations (the fine-tuning
config's ``data.batch_augment``): what :func:`mimkit.data.finetune_transform` does image by
image, for array data sets (the embedded set, IDX, CIFAR).

Every image gets its own draws: RandomResizedCrop's box and a flip (the pieces of
:mod:`mimkit.data.batch_transforms`), RandAugment (torchvision's 14 operations and magnitudes
on 11 bins, so that magnitude 9 is timm's ``rand-m9``; geometric ones bilinear with black
fill), normalisation, then random erasing with per-pixel normal noise. What differs from the
per-image PIL pipeline: float arithmetic throughout (posterize, equalize and solarize still
quantise to 8 bits), bicubic grid sampling without antialiasing for the crops, and the
sharpness filter's result is not rounded.

Why: on 28 px images PIL's RandAugment, image by image, costs more CPU than the training step
of a small ViT (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mimkit.data.batch_transforms import (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    coin,
    crop_boxes,
    draw_box_sizes,
    per_image,
    resized_crops,
    where_images,
)

ERASE_SCALE = (0.02, 1 / 3)  # RandomErasing's defaults: area fraction and aspect ratios
ERASE_RATIO = (0.3, 3.3)
# RandAugment's operations, in torchvision's order (the index is what an image draws).
GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
RANDAUG_OPS = (
    "identity",
    *GEOMETRIC,
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
)


def _to_255(x: Tensor) -> Tensor:
    """The 8-bit levels of images in [0, 1]."""
    return (x * 255).round_().clamp_(0, 255)


def adjust_sharpness(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with its smoothed version (PIL's SMOOTH filter: the 3x3 neighbourhood
    with the centre weighted 5, / 13; borders kept), as PIL and torchvision."""
    height, width = x.shape[2:]
    if height < 3 or width < 3:
        return x
    # The 3x3 sum by average pooling, then the centre's extra weight: a small conv2d cost
    # several times more here.
    neighbourhood = F.avg_pool2d(x, 3, stride=1) * 9
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = (neighbourhood + 4 * x[..., 1:-1, 1:-1]) / 13
    f = per_image(factor)
    return (f * x + (1 - f) * degenerate).clamp(0, 1)


def posterize(x: Tensor, bits: int) -> Tensor:
    """Keep the ``bits`` high bits of every 8-bit level."""
    step = 2 ** (8 - bits)
    return torch.div(_to_255(x), step, rounding_mode="floor").mul_(step / 255)


def solarize(x: Tensor, threshold: float) -> Tensor:
    """Invert the levels at or above ``threshold`` (a fraction of 255)."""
    return torch.where(_to_255(x) >= round(threshold * 255, 6), 1 - x, x)


def autocontrast(x: Tensor) -> Tensor:
    """Stretch each channel of each image to the full range (left as is where flat)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    flat = hi <= lo
    scale = torch.where(flat, torch.ones_like(hi), 1 / (hi - lo).clamp_min(1e-12))
    return ((x - torch.where(flat, torch.zeros_like(lo), lo)) * scale).clamp(0, 1)


def equalize(x: Tensor) -> Tensor:
    """Histogram equalisation of each channel of each image on its 8-bit levels, PIL's rule:
    step = (pixels - count of the top level) // 255; a channel whose step is 0 is kept."""
    n, c, height, width = x.shape
    levels = _to_255(x).long().reshape(n * c, -1)
    hist = torch.zeros(n * c, 256, dtype=torch.long).scatter_add_(
        1, levels, torch.ones_like(levels)
    )
    top = (hist > 0).long().mul(torch.arange(256)).argmax(1, keepdim=True)
    step = (height * width - hist.gather(1, top)) // 255
    lut = (hist.cumsum(1) + step // 2) // step.clamp_min(1)
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)  # level v maps to the count below it
    out = lut.gather(1, levels).to(x.dtype).div_(255)
    out = torch.where(step > 0, out, x.reshape(n * c, -1))
    return out.view(n, c, height, width)


def _pixel_to_unit(height: int, width: int) -> Tensor:
    """Pixel coordinates (the image spans [0, W] x [0, H]) to grid_sample's [-1, 1]."""
    return torch.tensor([[2 / width, 0.0, -1.0], [0.0, 2 / height, -1.0], [0.0, 0.0, 1.0]])


def geometric_maps(kinds: Tensor, values: Tensor, height: int, width: int) -> Tensor:
    """``[k, 2, 3]`` maps from output to input points (grid_sample's units) of the geometric
    operations ``GEOMETRIC[kinds]`` with signed ``values``: shears (as torchvision's
    RandAugment, about the top-left corner), translations in whole pixels, rotations in
    degrees about the centre."""
    k = kinds.shape[0]
    inverse = torch.eye(3).repeat(k, 1, 1)  # output pixel -> input pixel
    for i, name in enumerate(GEOMETRIC):
        sel = kinds == i
        v = values[sel]
        if name == "shear_x":
            inverse[sel, 0, 1] = v
        elif name == "shear_y":
            inverse[sel, 1, 0] = v
        elif name == "translate_x":
            inverse[sel, 0, 2] = -v
        elif name == "translate_y":
            inverse[sel, 1, 2] = -v
        else:  # rotate: the output point turned back about the centre
            a = torch.deg2rad(v)
            cos, sin = torch.cos(a), torch.sin(a)
            cx, cy = width / 2, height / 2
            inverse[sel, 0, 0], inverse[sel, 0, 1] = cos, -sin
            inverse[sel, 1, 0], inverse[sel, 1, 1] = sin, cos
            inverse[sel, 0, 2] = cx - cos * cx + sin * cy
            inverse[sel, 1, 2] = cy - sin * cx - cos * cy
    unit = _pixel_to_unit(height, width)
    return (unit @ inverse @ torch.linalg.inv(unit))[:, :2]


def warp(x: Tensor, maps: Tensor) -> Tensor:
    """Images resampled through ``maps`` (bilinear; points outside are black)."""
    grid = F.affine_grid(maps.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class BatchRandAugment:
    """RandAugment for ``[B, C, H, W]`` images in [0, 1]: ``num_ops`` rounds, each image
    drawing one of the 14 operations (uniformly) and a sign per round; ``magnitude`` is the bin
    of 11 (0..10), as :func:`mimkit.data.finetune_transform` configures torchvision's."""

    def __init__(self, num_ops: int, magnitude: int) -> None:
        self.num_ops, self.magnitude = num_ops, magnitude

    def _strength(self, top: float) -> float:
        return top * self.magnitude / 10

    def photometric(self) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
        """Each operation on the images that drew it, given their signs."""
        m = self._strength(0.9)  # brightness, colour, contrast, sharpness: factor 1 +- m
        bits = 8 - round(self.magnitude * 0.4)
        threshold = 1 - self.magnitude / 10
        return {
            "brightness": lambda z, s: adjust_brightness(z, 1 + m * s),
            "color": lambda z, s: adjust_saturation(z, 1 + m * s) if z.shape[1] == 3 else z,
            "contrast": lambda z, s: adjust_contrast(z, 1 + m * s),
            "sharpness": lambda z, s: adjust_sharpness(z, 1 + m * s),
            "posterize": lambda z, s: posterize(z, bits),
            "solarize": lambda z, s: solarize(z, threshold),
            "autocontrast": lambda z, s: autocontrast(z),
            "equalize": lambda z, s: equalize(z),
        }

    def geometric_values(self, height: int, width: int) -> Tensor:
        """The unsigned magnitude of each geometric operation at this image size."""
        shear = self._strength(0.3)
        return torch.tensor(
            [
                shear,
                shear,
                float(int(self._strength(150 / 331 * width))),
                float(int(self._strength(150 / 331 * height))),
                self._strength(30.0),
            ]
        )

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        n, _, height, width = x.shape
        first_geometric = RANDAUG_OPS.index(GEOMETRIC[0])
        values = self.geometric_values(height, width)
        ops = self.photometric()
        for _ in range(self.num_ops):
            drawn = torch.randint(len(RANDAUG_OPS), (n,), generator=g)
            sign = torch.where(coin(n, 0.5, g), -1.0, 1.0)
            kind = drawn - first_geometric
            sel = (kind >= 0) & (kind < len(GEOMETRIC))
            if bool(sel.any()):
                maps = geometric_maps(kind[sel], values[kind[sel]] * sign[sel], height, width)
                x = where_images(sel, lambda z, maps=maps: warp(z, maps), x)
            for name, op in ops.items():
                sel = drawn == RANDAUG_OPS.index(name)
                x = where_images(sel, lambda z, op=op, s=sign[sel]: op(z, s), x)
        return x


def erase(x: Tensor, prob: float, g: torch.Generator) -> Tensor:
    """RandomErasing (value "random") for each image with probability ``prob``: a box of
    2-33% of the area, aspect ratio 0.3-3.3 (up to 10 tries, else none), filled with
    standard normal noise."""
    n, c, height, width = x.shape
    h, w, found = draw_box_sizes(n, height, width, ERASE_SCALE, ERASE_RATIO, g, strict=True)
    top = torch.floor(torch.rand(n, generator=g) * (height - h + 1)).view(n, 1, 1)
    left = torch.floor(torch.rand(n, generator=g) * (width - w + 1)).view(n, 1, 1)
    erased = found & coin(n, prob, g)
    if not bool(erased.any()):
        return x
    rows = torch.arange(height).view(1, height, 1)
    cols = torch.arange(width).view(1, 1, width)
    inside = (rows >= top) & (rows < top + h.view(n, 1, 1))
    inside = (inside & (cols >= left) & (cols < left + w.view(n, 1, 1)))[erased].unsqueeze(1)
    x = x.clone()
    noise = torch.randn(x[erased].shape, generator=g, dtype=x.dtype)
    x[erased] = torch.where(inside, noise, x[erased])
    return x


class BatchFinetuneTransform:
    """Uint8 images ``[B, H, W, C]`` (C = 1 or 3) and a generator -> normalised RGB views
    ``[B, 3, img_size, img_size]``: RandomResizedCrop (bicubic) with a flip, RandAugment,
    normalisation, random erasing; takes the arguments of :func:`finetune_transform`."""

    def __init__(
        self,
        img_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        flip_prob: float = 0.5,
        randaug_ops: int = 2,
        randaug_magnitude: int = 9,
        erase_prob: float = 0.25,
    ) -> None:
        self.img_size = img_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = (float(scale[0]), float(scale[1]))
        self.flip_prob, self.erase_prob = flip_prob, erase_prob
        self.randaug = BatchRandAugment(randaug_ops, randaug_magnitude)

    def __call__(self, images: Tensor, g: torch.Generator) -> Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"expected uint8 images [B, H, W, 1 or 3], got {tuple(images.shape)}")
        x = images.permute(0, 3, 1, 2).float().div_(255)
        n = x.shape[0]
        boxes = crop_boxes(n, x.shape[2], x.shape[3], self.scale, g)
        x = resized_crops(x, boxes, self.img_size, coin(n, self.flip_prob, g))
        x = self.randaug(x, g)
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std  # gray sources become RGB
        return erase(x, self.erase_prob, g) if self.erase_prob > 0 else x

    def __repr__(self) -> str:
        r = self.randaug
        return (
            f"{type(self).__name__}(size={self.img_size}, scale={self.scale}, "
            f"randaug={r.num_ops}x{r.magnitude}, erase={self.erase_prob})"
        )
