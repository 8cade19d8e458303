import numpy as np
import pytest
import torch
from PIL import Image

from mimkit.data import (
    IMAGENET_MEAN,
    MultiCropTransform,
    default_normalization,
    eval_transform,
    train_eval_transform,
)
from mimkit.data.transforms import Augmentations, RandomGaussianBlur, blur_sigma


@pytest.mark.parametrize(
    "src,g,loc,ng,nl",
    [((28, 28), 32, 16, 2, 0), ((28, 28), 32, 16, 2, 4), ((300, 250), 224, 96, 3, 2)],
)
def test_multicrop_counts_and_sizes(src, g, loc, ng, nl):
    torch.manual_seed(0)
    t = MultiCropTransform(g, loc, num_global=ng, num_local=nl)
    crops = t(Image.new("RGB", src, (120, 60, 30)))
    assert len(crops) == ng + nl
    assert all(c.dtype == torch.float32 for c in crops)
    assert [tuple(c.shape) for c in crops] == [(3, g, g)] * ng + [(3, loc, loc)] * nl


def test_blur_sigma_scales_with_the_crop():
    assert blur_sigma(224) == pytest.approx((0.1, 2.0))
    assert blur_sigma(96)[1] == pytest.approx(2.0 * 96 / 224)
    assert blur_sigma(28)[1] == 0.5 and blur_sigma(28)[0] == pytest.approx(0.0125)


def test_reference_blur_sigma_is_the_same_on_every_crop():
    # DINO / iBOT blur 96 px local crops with sigma 0.1-2.0 px, as the 224 px global ones.
    assert blur_sigma(96, scaled=False) == (0.1, 2.0) == blur_sigma(28, scaled=False)
    t = MultiCropTransform(224, 96, 2, 2, augment=Augmentations(blur_sigma_scaled=False))
    blurs = [
        op for c in (t.global1, t.global2, t.local) for op in c.transforms
        if isinstance(op, RandomGaussianBlur)
    ]
    assert [b.sigma for b in blurs] == [(0.1, 2.0)] * 3
    scaled = MultiCropTransform(224, 96, 2, 2)
    local_blur = [op for op in scaled.local.transforms if isinstance(op, RandomGaussianBlur)]
    assert local_blur[0].sigma == pytest.approx(blur_sigma(96))


def test_blur_is_seeded_and_blurs():
    img = Image.fromarray((np.arange(28 * 28).reshape(28, 28) % 2 * 255).astype(np.uint8))
    blur = RandomGaussianBlur(1.0, (1.0, 1.0))
    out = np.asarray(blur(img), dtype=float)
    assert out.std() < np.asarray(img, dtype=float).std() / 2  # a checkerboard is smoothed
    torch.manual_seed(3)
    a = np.asarray(RandomGaussianBlur(0.5, (0.1, 2.0))(img))
    torch.manual_seed(3)
    b = np.asarray(RandomGaussianBlur(0.5, (0.1, 2.0))(img))
    assert np.array_equal(a, b)
    assert RandomGaussianBlur(0.0, (1.0, 1.0))(img) is img


def test_eval_transforms():
    img = Image.new("RGB", (320, 240))
    assert eval_transform(224)(img).shape == (3, 224, 224)
    assert eval_transform(224).transforms[0].size == 256
    small = eval_transform(32)
    assert small.transforms[0].size == 32 and small(Image.new("RGB", (28, 28))).shape == (3, 32, 32)
    assert train_eval_transform(32)(Image.new("RGB", (28, 28))).shape == (3, 32, 32)


def test_default_normalization():
    assert default_normalization("embedded")[0] == (0.286,) * 3
    assert default_normalization("fashion-mnist:/x")[1] == (0.353,) * 3
    assert default_normalization("/data/imagenet")[0] == IMAGENET_MEAN


def _checker(size: int = 28) -> Image.Image:
    arr = (np.indices((size, size)).sum(0) % 2 * 200 + 20).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def test_augmentations_off_leave_only_crop_and_normalise():
    from mimkit.data import Augmentations

    off = Augmentations(
        flip_prob=0, jitter_prob=0, grayscale_prob=0, blur_prob=(0, 0, 0), solarize_prob=0
    )
    t = MultiCropTransform(
        28, 14, 2, 0, global_scale=(1, 1), mean=(0, 0, 0), std=(1, 1, 1), augment=off
    )
    img = _checker()
    ref = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    for _ in range(5):  # full-image crops, nothing else: every crop is the image itself
        for crop in t(img):
            assert torch.allclose(crop, ref, atol=1e-6)


def test_solarize_probability_one_inverts_bright_pixels_of_the_second_crop():
    from mimkit.data import Augmentations

    aug = Augmentations(
        flip_prob=0, jitter_prob=0, grayscale_prob=0, blur_prob=(0, 0, 0), solarize_prob=1
    )
    t = MultiCropTransform(
        28, 14, 2, 0, global_scale=(1, 1), mean=(0, 0, 0), std=(1, 1, 1), augment=aug
    )
    first, second = t(_checker())
    assert first.max() > 0.7 and second.max() < 0.2  # 200 -> 55 after solarising at 128
