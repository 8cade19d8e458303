"""Augmentations (docs/method.md, section "Pretraining") and evaluation transforms, built
from torchvision transforms.

Randomness comes from torch's global RNG, seeded per image by the data order's streams
(``mimkit.train.sampling``).

Normalisation: ImageNet mean/std by default; each data source names its own
(:func:`mimkit.data.default_normalization`, ``data/build.py``): the Fashion-MNIST statistics
(mean 0.286, std 0.353 on every channel, measured on the embedded train split) for
``"embedded"`` and Fashion-MNIST, MNIST's (0.1307, 0.3081) for MNIST (by prefix or
recognised in a plain folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN = (0.286, 0.286, 0.286)
FASHION_MNIST_STD = (0.353, 0.353, 0.353)
MNIST_MEAN = (0.1307, 0.1307, 0.1307)
MNIST_STD = (0.3081, 0.3081, 0.3081)

Stats = tuple[tuple[float, ...], tuple[float, ...]]


DINO_BLUR_SIGMA = (0.1, 2.0)


def blur_sigma(crop_size: int, scaled: bool = True) -> tuple[float, float]:
    """DINO's blur sigma range, (0.1, 2.0) px at 224 px, scaled with the crop size; the upper
    end stays at least 0.5 px so that small crops still get a visible blur. ``scaled=False``
    gives DINO's and iBOT's own rule: (0.1, 2.0) px on every crop, 96 px local ones too."""
    if not scaled:
        return DINO_BLUR_SIGMA
    scale = crop_size / 224
    return 0.1 * scale, max(0.5, 2.0 * scale)


class RandomGaussianBlur:
    """Gaussian blur with probability ``p`` and a sigma drawn uniformly from ``sigma``.

    Blurs with PIL's filter, as DINO does: torchvision's tensor blur is a conv2d per call,
    which made the blur most of the data loader's time on small crops. Draws from torch's RNG
    so that per-sample seeding makes it reproducible.
    """

    def __init__(self, p: float, sigma: tuple[float, float]) -> None:
        self.p, self.sigma = p, sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.p <= 0:
            return img
        if torch.rand(()) >= self.p:
            return img
        lo, hi = self.sigma
        radius = lo + (hi - lo) * float(torch.rand(()))
        return img.filter(ImageFilter.GaussianBlur(radius=radius))

    def __repr__(self) -> str:
        return f"RandomGaussianBlur(p={self.p}, sigma={self.sigma})"


@dataclass(frozen=True)
class Augmentations:
    """Probabilities and strengths of the multi-crop augmentations (DINO's by default).

    ``blur_prob`` is (global crop 1, global crops 2..g, local crops); solarisation applies to
    global crops 2..g. ``jitter_strength`` scales DINO's colour jitter (brightness 0.4,
    contrast 0.4, saturation 0.2, hue 0.1); 0 turns the jitter off. ``blur_sigma_scaled``:
    blur sigmas scale with the crop size (see :func:`blur_sigma`).
    """

    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    jitter_strength: float = 1.0
    grayscale_prob: float = 0.2
    blur_prob: tuple[float, float, float] = (1.0, 0.1, 0.5)
    solarize_prob: float = 0.2
    blur_sigma_scaled: bool = True

    def photometric(self) -> list:
        s = self.jitter_strength
        ops: list = [T.RandomHorizontalFlip(self.flip_prob)]
        if s > 0 and self.jitter_prob > 0:
            jitter = T.ColorJitter(0.4 * s, 0.4 * s, 0.2 * s, min(0.5, 0.1 * s))
            ops.append(T.RandomApply([jitter], p=self.jitter_prob))
        if self.grayscale_prob > 0:
            ops.append(T.RandomGrayscale(p=self.grayscale_prob))
        return ops


def _normalize(mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    return T.Compose([T.ToTensor(), T.Normalize(tuple(mean), tuple(std))])


class MultiCropSpec:
    """What a multi-crop augmentation makes: ``num_global`` global crops of ``global_size``
    then ``num_local`` local crops of ``local_size``, normalised with ``mean`` / ``std``.
    Shared by the per-image (:class:`MultiCropTransform`) and the whole-batch
    (:class:`mimkit.data.BatchMultiCrop`) versions, which build their parts in ``_build``."""

    def __init__(
        self,
        global_size: int = 224,
        local_size: int = 96,
        num_global: int = 2,
        num_local: int = 0,
        global_scale: tuple[float, float] = (0.25, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.25),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment: Augmentations | None = None,
    ):
        if num_global < 1 or num_local < 0:
            raise ValueError(
                f"need num_global >= 1 and num_local >= 0, got {num_global}, {num_local}"
            )
        self.num_global, self.num_local = num_global, num_local
        self.global_size, self.local_size = global_size, local_size
        self.global_scale = (float(global_scale[0]), float(global_scale[1]))
        self.local_scale = (float(local_scale[0]), float(local_scale[1]))
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment = augment or Augmentations()
        self._build()

    def _build(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(global={self.num_global}x{self.global_size}, "
            f"local={self.num_local}x{self.local_size})"
        )


class MultiCropTransform(MultiCropSpec):
    """PIL image -> list of ``num_global`` global crops then ``num_local`` local crops (tensors).

    Global crop 1: RandomResizedCrop (bicubic), flip, colour jitter, grayscale, blur (p 1 by
    default). Global crops 2..g: the same with blur p .1 and solarize p .2. Local crops: a
    smaller RandomResizedCrop, flip, jitter, grayscale, blur p .5. Blur sigmas scale with the
    crop size; ``augment`` sets every probability and the jitter strength.
    """

    def _build(self) -> None:
        norm = _normalize(self.mean, self.std)
        bicubic = InterpolationMode.BICUBIC

        def rrc(size, scale):
            return T.RandomResizedCrop(size, scale=tuple(scale), interpolation=bicubic)

        aug = self.augment

        def blur(size: int, p: float) -> RandomGaussianBlur:
            return RandomGaussianBlur(p, blur_sigma(size, aug.blur_sigma_scaled))

        gs, ls = self.global_size, self.local_size
        blur1, blur2, blur_local = aug.blur_prob
        solarize = [T.RandomSolarize(128, p=aug.solarize_prob)] if aug.solarize_prob > 0 else []
        self.global1 = T.Compose(
            [rrc(gs, self.global_scale), *aug.photometric(), blur(gs, blur1), norm]
        )
        self.global2 = T.Compose(
            [rrc(gs, self.global_scale), *aug.photometric(), blur(gs, blur2), *solarize, norm]
        )
        self.local = T.Compose(
            [rrc(ls, self.local_scale), *aug.photometric(), blur(ls, blur_local), norm]
        )

    def __call__(self, img) -> list[torch.Tensor]:
        crops = [self.global1(img)]
        crops += [self.global2(img) for _ in range(self.num_global - 1)]
        crops += [self.local(img) for _ in range(self.num_local)]
        return crops


def eval_transform(
    img_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    resize_ratio: float | None = None,
) -> T.Compose:
    """Resize (shorter side to ``img_size * resize_ratio``), center crop ``img_size``, normalise.

    ``resize_ratio`` defaults to 256/224 for ``img_size >= 128`` (resize 256, crop 224) and to 1
    for small images (resized straight to ``img_size``).
    """
    if resize_ratio is None:
        resize_ratio = 256 / 224 if img_size >= 128 else 1.0
    resize = int(round(img_size * resize_ratio))
    return T.Compose(
        [
            T.Resize(resize, interpolation=InterpolationMode.BICUBIC),
            T.CenterCrop(img_size),
            _normalize(mean, std),
        ]
    )


def train_eval_transform(
    img_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale: tuple[float, float] | None = None,
) -> T.Compose:
    """Linear-probe training transform: RandomResizedCrop (bicubic) + flip + normalise.

    ``scale`` defaults to (0.08, 1) for ``img_size >= 128`` and (0.25, 1) for small images.
    """
    if scale is None:
        scale = (0.08, 1.0) if img_size >= 128 else (0.25, 1.0)
    return T.Compose(
        [
            T.RandomResizedCrop(
                img_size, scale=tuple(scale), interpolation=InterpolationMode.BICUBIC
            ),
            T.RandomHorizontalFlip(),
            _normalize(mean, std),
        ]
    )


def finetune_transform(
    img_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    flip_prob: float = 0.5,
    randaug_ops: int = 2,
    randaug_magnitude: int = 9,
    erase_prob: float = 0.25,
) -> T.Compose:
    """Fine-tuning's training transform, the BEiT / iBOT recipe built from torchvision parts:
    RandomResizedCrop (bicubic), flip, RandAugment, normalise, random erasing.

    ``randaug_magnitude`` is on timm's 0-10 scale (``rand-m9`` = 9): torchvision's RandAugment
    runs with 11 magnitude bins so that 9 gives the same strengths (shear 0.27, rotation 27
    degrees ...). timm's magnitude noise (``mstd``) has no torchvision counterpart. Erased
    boxes are filled with per-pixel normal noise (timm's "pixel" mode). 0 turns a part off.
    """
    ops: list = [
        T.RandomResizedCrop(img_size, scale=tuple(scale), interpolation=InterpolationMode.BICUBIC)
    ]
    if flip_prob > 0:
        ops.append(T.RandomHorizontalFlip(flip_prob))
    if randaug_ops > 0:
        ops.append(
            T.RandAugment(
                num_ops=randaug_ops,
                magnitude=randaug_magnitude,
                num_magnitude_bins=11,
                interpolation=InterpolationMode.BILINEAR,
            )
        )
    ops.append(_normalize(mean, std))
    if erase_prob > 0:
        ops.append(T.RandomErasing(p=erase_prob, value="random"))
    return T.Compose(ops)

