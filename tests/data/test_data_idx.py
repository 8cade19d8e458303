import gzip

import numpy as np
import pytest

from mimkit.data import build_dataset, dataset_fingerprint, num_classes, read_idx, write_idx
from mimkit.errors import DataError


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    f = tmp_path / f"x-idx3-ubyte{suffix}"
    write_idx(f, a)
    raw = f.read_bytes()
    if suffix:
        assert raw[:2] == b"\x1f\x8b"
        raw = gzip.decompress(raw)
    assert raw[:4] == bytes([0, 0, 8, 3]) and raw[4:8] == (7).to_bytes(4, "big")
    np.testing.assert_array_equal(read_idx(f), a)
    b = np.arange(-3, 3, dtype=np.int32)
    write_idx(tmp_path / f"y{suffix}", b)
    np.testing.assert_array_equal(read_idx(tmp_path / f"y{suffix}"), b)


def test_idx_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03")
    with pytest.raises(DataError, match="no valid IDX header"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(DataError, match="data bytes"):
        read_idx(tmp_path / "short")


def _write_mnist(root, gz_train=True):
    rng = np.random.default_rng(1)
    sx = ".gz" if gz_train else ""
    write_idx(root / f"train-images-idx3-ubyte{sx}", rng.integers(0, 256, (30, 28, 28), np.uint8))
    write_idx(root / f"train-labels-idx1-ubyte{sx}", np.arange(30, dtype=np.uint8) % 10)
    write_idx(root / "t10k-images-idx3-ubyte", rng.integers(0, 256, (10, 28, 28), np.uint8))
    write_idx(root / "t10k-labels-idx1-ubyte", np.arange(10, dtype=np.uint8))


def test_idx_dataset_via_build(tmp_path):
    _write_mnist(tmp_path)
    train = build_dataset(f"fashion-mnist:{tmp_path}", "train", subset=2)
    assert len(train) == 20 and num_classes(train) == 10 and train.classes[0] == "T-shirt/top"
    img, y = train[3]
    assert img.mode == "RGB" and img.size == (28, 28) and y == 3
    np.testing.assert_array_equal(
        np.asarray(img)[..., 0], read_idx(tmp_path / "train-images-idx3-ubyte.gz")[3]
    )
    val = build_dataset(f"mnist:{tmp_path}", "val")
    assert len(val) == 10 and val.classes[0] == "0"
    assert dataset_fingerprint(f"mnist:{tmp_path}", "val") != dataset_fingerprint(
        f"mnist:{tmp_path}", "train"
    )


def test_idx_missing(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(f"fashion-mnist:{tmp_path / 'nope'}", "train")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        build_dataset(f"fashion-mnist:{tmp_path}", "train")
