"""Fake CIFAR / STL-10 copies in torchvision's on-disk format, cross-checked with torchvision."""

import pickle

import numpy as np
import pytest
import torchvision.datasets.cifar as tv_cifar
import torchvision.datasets.stl10 as tv_stl10
from data_fixtures import cifar10_folder, dump_pickle

from mimkit.data import build_dataset, dataset_fingerprint, dataset_labels, num_classes
from mimkit.errors import DataError


def test_fake_cifar10_matches_torchvision(tmp_path, monkeypatch):
    root = cifar10_folder(tmp_path, per_batch=4)
    train = build_dataset(f"cifar10:{root}", "train")
    val = build_dataset(f"cifar10:{root}", "val")
    assert len(train) == 20 and len(val) == 10 and num_classes(train) == 10
    assert train.classes[1] == "automobile"
    # Same pixels and labels as torchvision's reader (its md5 check bypassed for the fake copy).
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    ref = tv_cifar.CIFAR10(str(root), train=True, download=False)
    for i in (0, 7, 19):
        img, y = train[i]
        r_img, r_y = ref[i]
        assert img.mode == "RGB" and img.size == (32, 32) and y == r_y
        np.testing.assert_array_equal(np.asarray(img), np.asarray(r_img))
    assert dataset_labels(train) == list(ref.targets)
    # The folder itself also works, and subsets apply.
    assert len(build_dataset(f"cifar10:{root / 'cifar-10-batches-py'}", "val", subset=1)) == 10
    assert len(dataset_fingerprint(f"cifar10:{root}", "val")) == 16


def test_fake_cifar100(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    data = np.zeros((3, 3072), np.uint8)
    for name in ("train", "test"):
        dump_pickle(d / name, {"data": data, "fine_labels": [0, 5, 99], "coarse_labels": [0, 1, 2]})
    dump_pickle(d / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    ds = build_dataset(f"cifar100:{tmp_path}", "val")
    assert len(ds) == 3 and num_classes(ds) == 100 and ds[2][1] == 99


def test_cifar_missing(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(f"cifar10:{tmp_path / 'none'}", "train")
    with pytest.raises(DataError, match="CIFAR-10 file .*batches.meta does not exist"):
        build_dataset(f"cifar10:{tmp_path}", "train")
    with pytest.raises(DataError, match="CIFAR-100 file"):
        build_dataset(f"cifar100:{tmp_path}", "val")
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for n in ["batches.meta", "test_batch"]:
        (d / n).write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot be read"):
        build_dataset(f"cifar10:{tmp_path}", "val")


def test_fake_stl10_matches_torchvision(tmp_path, monkeypatch):
    d = tmp_path / "stl10_binary"
    d.mkdir()
    rng = np.random.default_rng(0)
    for part, n in (("train", 6), ("test", 3), ("unlabeled", 2)):
        rng.integers(0, 256, n * 3 * 96 * 96, dtype=np.uint8).tofile(d / f"{part}_X.bin")
        if part != "unlabeled":
            (np.arange(n, dtype=np.uint8) % 10 + 1).tofile(d / f"{part}_y.bin")
    train = build_dataset(f"stl10:{tmp_path}", "train")
    assert len(train) == 6 and num_classes(train) == 10 and dataset_labels(train)[:3] == [0, 1, 2]
    assert len(build_dataset(f"stl10:{tmp_path}", "val")) == 3
    both = build_dataset(f"stl10:{tmp_path}", "train+unlabeled")
    assert len(both) == 8 and dataset_labels(both)[-2:] == [-1, -1]
    # Whole batches of pixels (data.batch_augment) are the images __getitem__ gives.
    pixels = both.pixels([7, 0, 5])
    assert pixels.shape == (3, 96, 96, 3) and pixels.dtype == np.uint8
    for row, i in zip(pixels, (7, 0, 5), strict=True):
        np.testing.assert_array_equal(row, np.asarray(both[i][0]))
    assert both.labels_of([7, 0, 5]).tolist() == [-1, 0, 5]
    restored = pickle.loads(pickle.dumps(both))
    assert len(pickle.dumps(both)) < 8 * 3 * 96 * 96
    np.testing.assert_array_equal(np.asarray(restored[7][0]), np.asarray(both[7][0]))
    monkeypatch.setattr(tv_stl10, "check_integrity", lambda *a, **k: True)
    ref = tv_stl10.STL10(str(tmp_path), split="train+unlabeled", download=False)
    for i in (0, 5, 7):
        img, y = both[i]
        r_img, r_y = ref[i]
        assert img.size == (96, 96) and y == r_y
        np.testing.assert_array_equal(np.asarray(img), np.asarray(r_img))
    with pytest.raises(DataError, match="STL-10 file .*test_X.bin does not exist"):
        (d / "test_X.bin").unlink()
        build_dataset(f"stl10:{tmp_path}", "val")


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_a_cifar_batch_that_names_other_code_is_refused(tmp_path):
    root = cifar10_folder(tmp_path, per_batch=4)
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    evil = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3], "x": _Exploit()}
    dump_pickle(batch, evil)
    with pytest.raises(DataError, match="not allowed"):
        build_dataset(f"cifar10:{root}", "train")
