import numpy as np
import pytest
import torch

from mimkit.data import (
    FASHION_MNIST_CLASSES,
    EmbeddedFashionMNIST,
    MultiCropTransform,
    build_dataset,
    dataset_fingerprint,
    dataset_labels,
    eval_transform,
    num_classes,
    validate_data_spec,
)
from mimkit.data.array_datasets import embedded_asset_path
from mimkit.errors import ConfigError


def test_embedded_sizes_classes_balance():
    train = build_dataset("embedded", "train")
    val = build_dataset("embedded", "val")
    assert len(train) == 10_000 and len(val) == 2_000
    assert num_classes(train) == 10 and list(train.classes) == list(FASHION_MNIST_CLASSES)
    assert np.bincount(dataset_labels(train)).tolist() == [1000] * 10
    assert np.bincount(dataset_labels(val)).tolist() == [200] * 10
    img, label = train[0]
    assert img.mode == "RGB" and img.size == (28, 28) and isinstance(label, int)


def test_embedded_asset_format():
    with np.load(embedded_asset_path(), allow_pickle=False) as z:
        assert z["train_images"].shape == (10_000, 28, 28)
        assert z["train_images"].dtype == np.uint8
        assert z["test_images"].shape == (2_000, 28, 28)
        assert z["class_names"].dtype.kind == "U"


def test_embedded_with_transforms():
    ds = EmbeddedFashionMNIST("val", eval_transform(32, (0.286,) * 3, (0.353,) * 3))
    x, y = ds[5]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 32, 32) and 0 <= y < 10
    ds = build_dataset(None, "train", MultiCropTransform(32, 16, num_global=2, num_local=2))
    crops, _ = ds[0]
    assert [tuple(c.shape) for c in crops] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 2


def test_embedded_subset_and_fingerprint():
    ds = build_dataset("embedded", "train", subset=0.1)
    assert np.bincount(dataset_labels(ds)).tolist() == [100] * 10
    assert len(build_dataset("embedded", "val", subset=7)) == 70
    fp = dataset_fingerprint("embedded", "train")
    assert fp == dataset_fingerprint("embedded", "train") and len(fp) == 16
    assert fp != dataset_fingerprint("embedded", "val")
    assert fp != dataset_fingerprint("embedded", "train", 0.1)
    validate_data_spec("embedded", "val")


@pytest.mark.parametrize("subset", [0, -1, 1.5, "10", True])
def test_bad_subset(subset):
    with pytest.raises(ConfigError):
        build_dataset("embedded", "train", subset=subset)


def test_bad_split():
    with pytest.raises(ConfigError, match="split"):
        build_dataset("embedded", "tain")
