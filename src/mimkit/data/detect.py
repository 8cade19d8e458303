"""Which data set a plain folder holds, recognised from its files (no prefix needed).

Looked for in this order: IDX files (MNIST / Fashion-MNIST), CIFAR-10 and CIFAR-100 batches,
STL-10 binaries (each in torchvision's layout or flat in the folder); anything else is read as
an image folder. The prefixes (``fashion-mnist:DIR`` ...) still say it explicitly.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from mimkit.data.idx import find_idx_file

LAYOUTS = (
    "IDX files (train-images-idx3-ubyte[.gz] ..., MNIST / Fashion-MNIST)",
    "CIFAR-10 (cifar-10-batches-py/ or batches.meta + data_batch_1..5)",
    "CIFAR-100 (cifar-100-python/ or meta + train + test)",
    "STL-10 (stl10_binary/ or train_X.bin, test_X.bin, unlabeled_X.bin)",
    "an image folder (DIR/CLASS/IMAGE or DIR/train/CLASS/IMAGE)",
)
NAMES = {
    "fashion-mnist": "Fashion-MNIST IDX files",
    "mnist": "MNIST IDX files",
    "cifar10": "CIFAR-10 batches",
    "cifar100": "CIFAR-100 batches",
    "stl10": "STL-10 binaries",
}
# Mean pixel of the first images: MNIST's digits are mostly black (0.13), Fashion-MNIST's
# garments much less so (0.29); the midpoint tells the two apart when the folder does not.
_IDX_MEAN_SPLIT = 0.2
_IDX_SAMPLE = 1000


def detect_kind(root: Path) -> str | None:
    """The kind of data set in ``root`` (a key of :data:`NAMES`), or None (an image folder
    or nothing recognised)."""
    if not root.is_dir():
        return None
    images = find_idx_file(root, "train", "images") or find_idx_file(root, "test", "images")
    if images is not None:
        return _idx_kind(root, images)
    if (root / "cifar-10-batches-py").is_dir() or (root / "batches.meta").is_file():
        return "cifar10"
    if (root / "cifar-100-python").is_dir() or (root / "meta").is_file() and (
        root / "train"
    ).is_file():
        return "cifar100"
    bins = ("train_X.bin", "test_X.bin", "unlabeled_X.bin")
    if (root / "stl10_binary").is_dir() or any((root / b).is_file() for b in bins):
        return "stl10"
    return None


def _idx_kind(root: Path, images: Path) -> str:
    if (root / "FashionMNIST").is_dir():  # torchvision's folder names say it
        return "fashion-mnist"
    if (root / "MNIST").is_dir():
        return "mnist"
    mean = idx_mean_pixel(images)
    return "mnist" if mean is not None and mean < _IDX_MEAN_SPLIT else "fashion-mnist"


def idx_mean_pixel(path: Path) -> float | None:
    """Mean pixel (0-1) of the first images of a uint8 IDX file; reads only those bytes.
    None when the file is not uint8 images (the data set's own reader then says why)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[2] != 0x08 or head[3] < 2:
                return None
            shape = np.frombuffer(f.read(4 * head[3]), ">u4")
            per_image = int(np.prod(shape[1:]))
            data = np.frombuffer(f.read(per_image * _IDX_SAMPLE), np.uint8)
    except (OSError, EOFError, ValueError):
        return None
    return float(data.mean()) / 255 if data.size else None


def describe(kind: str, root: Path) -> str:
    """One line saying what was recognised in ``root``."""
    return f"data {root}: recognised {NAMES[kind]} (say it with {kind}:{root})"
