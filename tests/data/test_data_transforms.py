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
from mimkit.data.transforms import blur_kernel_size


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


def test_blur_kernel_scales():
    assert blur_kernel_size(32) == 3 and blur_kernel_size(16) == 3
    assert blur_kernel_size(96) == 11 and blur_kernel_size(224) == 23
    assert all(blur_kernel_size(s) % 2 == 1 for s in range(8, 300))
    t = MultiCropTransform(32, 16, num_local=1)
    assert t.global1.transforms[-2].transforms[0].kernel_size == (3, 3)


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
