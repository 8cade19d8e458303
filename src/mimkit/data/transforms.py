"""Augmentations (SPEC section 1) and evaluation transforms, built from torchvision transforms.

Randomness comes from torch's global RNG (DataLoader seeds each worker); :func:`seed_worker`
also seeds ``random`` and ``numpy`` in workers.

Normalisation: ImageNet mean/std by default. :func:`default_normalization` returns the
Fashion-MNIST statistics (mean 0.286, std 0.353 on every channel, measured on the embedded
train split) for ``"embedded"`` and ``"fashion-mnist:..."`` specs, MNIST's (0.1307, 0.3081) for
``"mnist:..."``, and ImageNet's for everything else.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
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


def default_normalization(spec: str | None = "embedded") -> Stats:
    """``(mean, std)`` suited to a data spec (see the module docstring)."""
    s = (spec or "embedded").strip().lower()
    if s == "embedded" or s.startswith("fashion-mnist:"):
        return FASHION_MNIST_MEAN, FASHION_MNIST_STD
    if s.startswith("mnist:"):
        return MNIST_MEAN, MNIST_STD
    return IMAGENET_MEAN, IMAGENET_STD


def blur_sigma(crop_size: int) -> tuple[float, float]:
    """DINO's blur sigma range, (0.1, 2.0) px at 224 px, scaled with the crop size; the upper
    end stays at least 0.5 px so that small crops still get a visible blur."""
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
        if torch.rand(()) >= self.p:
            return img
        lo, hi = self.sigma
        radius = lo + (hi - lo) * float(torch.rand(()))
        return img.filter(ImageFilter.GaussianBlur(radius=radius))

    def __repr__(self) -> str:
        return f"RandomGaussianBlur(p={self.p}, sigma={self.sigma})"


def _blur(size: int, p: float) -> RandomGaussianBlur:
    return RandomGaussianBlur(p, blur_sigma(size))


def _flip_jitter_gray() -> list:
    return [
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
    ]


def _normalize(mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    return T.Compose([T.ToTensor(), T.Normalize(tuple(mean), tuple(std))])


class MultiCropTransform:
    """PIL image -> list of ``num_global`` global crops then ``num_local`` local crops (tensors).

    Global crop 1: RandomResizedCrop (bicubic), flip, colour jitter (p .8), grayscale (p .2),
    blur (p 1). Global crops 2..g: same with blur p .1 and solarize p .2. Local crops: smaller
    RandomResizedCrop, flip, jitter, grayscale, blur p .5. Blur sigmas scale with crop size.
    """

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
    ):
        if num_global < 1 or num_local < 0:
            raise ValueError(
                f"need num_global >= 1 and num_local >= 0, got {num_global}, {num_local}"
            )
        self.num_global, self.num_local = num_global, num_local
        self.global_size, self.local_size = global_size, local_size
        norm = _normalize(mean, std)
        bicubic = InterpolationMode.BICUBIC

        def rrc(size, scale):
            return T.RandomResizedCrop(size, scale=tuple(scale), interpolation=bicubic)

        self.global1 = T.Compose(
            [rrc(global_size, global_scale), *_flip_jitter_gray(), _blur(global_size, 1.0), norm]
        )
        self.global2 = T.Compose(
            [
                rrc(global_size, global_scale),
                *_flip_jitter_gray(),
                _blur(global_size, 0.1),
                T.RandomSolarize(128, p=0.2),
                norm,
            ]
        )
        self.local = T.Compose(
            [rrc(local_size, local_scale), *_flip_jitter_gray(), _blur(local_size, 0.5), norm]
        )

    def __call__(self, img) -> list[torch.Tensor]:
        crops = [self.global1(img)]
        crops += [self.global2(img) for _ in range(self.num_global - 1)]
        crops += [self.local(img) for _ in range(self.num_local)]
        return crops

    def __repr__(self) -> str:
        return (
            f"MultiCropTransform(global={self.num_global}x{self.global_size}, "
            f"local={self.num_local}x{self.local_size})"
        )


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


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoader: seed ``random`` and ``numpy`` from torch's worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
