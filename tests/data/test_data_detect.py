"""Plain folders of IDX, CIFAR or STL-10 files are recognised from the files themselves."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from mimkit.data import (
    build_dataset,
    default_normalization,
    describe_data_spec,
    num_classes,
    parse_data_spec,
)
from mimkit.data.idx import write_idx
from mimkit.data.transforms import FASHION_MNIST_MEAN, MNIST_MEAN
from mimkit.errors import DataError


def _idx_folder(root, brightness: int):
    """Train and test IDX files whose images are mostly 0 with ``brightness`` in a quarter."""
    root.mkdir()
    for part, n in (("train", 20), ("t10k", 10)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, :14, :14] = brightness
        write_idx(root / f"{part}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{part}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)
    return root


def test_idx_files_are_recognised_and_told_apart_by_their_pixels(tmp_path):
    digits = _idx_folder(tmp_path / "digits", 100)  # mean 0.10: MNIST-like
    garments = _idx_folder(tmp_path / "garments", 255)  # mean 0.25: Fashion-MNIST-like
    assert parse_data_spec(str(digits))[0] == "mnist"
    assert parse_data_spec(str(garments))[0] == "fashion-mnist"
    train = build_dataset(str(garments), "train")
    assert len(train) == 20 and train.classes[0] == "T-shirt/top"
    assert len(build_dataset(str(digits), "val")) == 10
    assert default_normalization(str(digits))[0] == MNIST_MEAN
    assert default_normalization(str(garments))[0] == FASHION_MNIST_MEAN
    line = describe_data_spec(str(digits))
    assert "MNIST IDX files, recognised" in line and f"mnist:{digits}" in line
    # The prefix still decides: these pixels say MNIST, the user says Fashion-MNIST.
    assert parse_data_spec(f"fashion-mnist:{digits}")[0] == "fashion-mnist"
    assert describe_data_spec(f"fashion-mnist:{digits}") == f"fashion-mnist:{digits}"


def test_cifar_and_stl10_files_are_recognised(tmp_path):
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"labels": [1, 2], "data": rng.integers(0, 256, (2, 3072), dtype=np.uint8)}
        (cifar / name).write_bytes(pickle.dumps(batch, protocol=2))
    names = {"label_names": [f"c{i}" for i in range(10)]}
    (cifar / "batches.meta").write_bytes(pickle.dumps(names, protocol=2))
    assert parse_data_spec(str(cifar))[0] == "cifar10"
    train = build_dataset(str(cifar), "train")
    assert len(train) == 10 and num_classes(train) == 10

    stl = tmp_path / "stl"
    stl.mkdir()
    rng.integers(0, 256, 3 * 3 * 96 * 96, dtype=np.uint8).tofile(stl / "unlabeled_X.bin")
    assert parse_data_spec(str(stl))[0] == "stl10"
    assert len(build_dataset(str(stl), "unlabeled")) == 3


def test_a_folder_with_nothing_recognised_lists_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("no data here")
    with pytest.raises(DataError) as err:
        build_dataset(str(tmp_path), "train")
    message = str(err.value)
    assert "\n" not in message and "looked for IDX files" in message
    for layout in ("CIFAR-10", "CIFAR-100", "STL-10", "an image folder"):
        assert layout in message
    # With the explicit prefix the user said what it is: no list of layouts.
    with pytest.raises(DataError) as err:
        build_dataset(f"folder:{tmp_path}", "train")
    assert "looked for" not in str(err.value)
