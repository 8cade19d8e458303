"""Fine-tuning's whole-batch augmentation against torchvision's per-image operations, on
embedded Fashion-MNIST images."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from mimkit.data import BatchFinetuneTransform, EmbeddedFashionMNIST, eval_transform
from mimkit.data.batch_finetune import (
    BatchRandAugment,
    adjust_sharpness,
    autocontrast,
    equalize,
    erase,
    geometric_maps,
    posterize,
    solarize,
    warp,
)

FM_MEAN, FM_STD = (0.286,) * 3, (0.353,) * 3
BILINEAR = InterpolationMode.BILINEAR


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _embedded_u8(n: int, channels: int = 1) -> torch.Tensor:
    """``[n, H, W, C]`` uint8 pixels of the first embedded train images."""
    pixels = torch.from_numpy(EmbeddedFashionMNIST("train").pixels(range(n)))
    return pixels.expand(-1, -1, -1, channels).contiguous()


def _embedded_float(n: int, channels: int = 3) -> torch.Tensor:
    return _embedded_u8(n, channels).permute(0, 3, 1, 2).float() / 255


def test_photometric_operations_match_torchvision_image_by_image():
    x = _embedded_float(6)
    u8 = (x * 255).round().to(torch.uint8)
    factors = torch.linspace(0.1, 1.9, 6)
    sharp = torch.stack([TF.adjust_sharpness(x[i], float(factors[i])) for i in range(6)])
    torch.testing.assert_close(adjust_sharpness(x, factors), sharp, atol=1e-5, rtol=0)
    torch.testing.assert_close(posterize(x, 4), TF.posterize(u8, 4).float() / 255)
    torch.testing.assert_close(solarize(x, 0.1), TF.solarize(u8, 25.5).float() / 255)
    torch.testing.assert_close(autocontrast(x * 0.5 + 0.1), TF.autocontrast(x * 0.5 + 0.1))
    torch.testing.assert_close(equalize(x), TF.equalize(u8).float() / 255)


@pytest.mark.parametrize(
    ("kind", "value"), [(0, 0.27), (1, -0.27), (2, 11.0), (3, -11.0), (4, 27.0), (4, -13.0)]
)
def test_geometric_operations_match_torchvision(kind, value):
    x = _embedded_float(1)[0]
    shear = math.degrees(math.atan(value))
    expected = {
        0: lambda: TF.affine(x, 0.0, [0, 0], 1.0, [shear, 0.0], BILINEAR, center=[0, 0]),
        1: lambda: TF.affine(x, 0.0, [0, 0], 1.0, [0.0, shear], BILINEAR, center=[0, 0]),
        2: lambda: TF.affine(x, 0.0, [int(value), 0], 1.0, [0.0, 0.0], BILINEAR),
        3: lambda: TF.affine(x, 0.0, [0, int(value)], 1.0, [0.0, 0.0], BILINEAR),
        4: lambda: TF.rotate(x, value, BILINEAR),
    }[kind]()
    maps = geometric_maps(torch.tensor([kind]), torch.tensor([value]), 28, 28)
    torch.testing.assert_close(warp(x[None], maps)[0], expected, atol=1e-5, rtol=0)


def test_randaugment_changes_every_image_by_its_own_draws_and_is_seeded():
    x = _embedded_float(64, channels=1)
    ra = BatchRandAugment(num_ops=2, magnitude=9)
    a, b, c = ra(x, _gen(0)), ra(x, _gen(0)), ra(x, _gen(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    changed = (a - x).abs().amax(dim=(1, 2, 3)) > 1e-6
    # Two draws among 14 operations, identity among them: most images change, not all.
    assert 0.6 < changed.float().mean() < 1.0
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(BatchRandAugment(num_ops=0, magnitude=9)(x, _gen(0)), x)


def test_erasing_fills_one_box_per_chosen_image_with_noise():
    x = torch.full((400, 3, 28, 28), 7.0)
    out = erase(x, 0.5, _gen(3))
    erased = out != 7.0
    per_image = erased.any(1).flatten(1).sum(1)
    chosen = per_image > 0
    assert 0.4 < chosen.float().mean() < 0.6
    area = per_image[chosen].float() / (28 * 28)
    assert float(area.min()) >= 0.015 and float(area.max()) <= 1 / 3 + 0.03
    for i in chosen.nonzero()[:20, 0].tolist():  # one rectangle, every channel
        rows, cols = erased[i, 0].any(1), erased[i, 0].any(0)
        assert int(rows.sum()) * int(cols.sum()) == int(erased[i, 0].sum())
        assert torch.equal(erased[i, 0], erased[i, 2])


def test_without_augmentations_it_is_the_evaluation_transform():
    plain = BatchFinetuneTransform(
        28, FM_MEAN, FM_STD, scale=(1.0, 1.0), flip_prob=0, randaug_ops=0, erase_prob=0
    )
    data = EmbeddedFashionMNIST("train", transform=eval_transform(28, FM_MEAN, FM_STD))
    expected = torch.stack([data[i][0] for i in range(8)])
    out = plain(_embedded_u8(8), _gen())
    assert out.shape == (8, 3, 28, 28)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_batches_are_seeded_random_views_of_the_requested_size():
    tf = BatchFinetuneTransform(16, FM_MEAN, FM_STD, scale=(0.35, 1.0))
    images = _embedded_u8(32, channels=3)
    a, b, c = tf(images, _gen(5)), tf(images, _gen(5)), tf(images, _gen(6))
    assert a.shape == (32, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all()
    with pytest.raises(ValueError, match="uint8"):
        tf(images.float(), _gen())
    # Each image its own draws: one image repeated gives as many different views.
    same = tf(images[:1].expand(8, -1, -1, -1).contiguous(), _gen(5))
    assert len({tuple(v.flatten()[::7].tolist()) for v in same}) == 8
