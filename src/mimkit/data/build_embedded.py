"""Regenerate the embedded Fashion-MNIST subset shipped in ``mimkit/data/assets``.

Usage: ``python -m mimkit.data.build_embedded IDX_DIR OUT.npz [--train-per-class 1000]
[--test-per-class 200]``

``IDX_DIR`` holds the four Fashion-MNIST IDX files (``train-images-idx3-ubyte.gz`` ...), e.g.
Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``). The subset
is class-balanced and deterministic: the first N images of every class, in file order.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mimkit.data.array_datasets import FASHION_MNIST_CLASSES
from mimkit.data.idx import find_idx_file, read_idx


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` samples of every class, in file order."""
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} samples, need {per_class}")
        keep[idx[:per_class]] = True
    return np.flatnonzero(keep)


def build(idx_dir: str, out: str, train_per_class: int = 1000, test_per_class: int = 200) -> None:
    arrays = {}
    for part, per_class in (("train", train_per_class), ("test", test_per_class)):
        img_path = find_idx_file(idx_dir, part, "images")
        lab_path = find_idx_file(idx_dir, part, "labels")
        if img_path is None or lab_path is None:
            raise SystemExit(f"{idx_dir}: missing {part} IDX files")
        images, labels = read_idx(img_path), read_idx(lab_path)
        keep = first_per_class(labels, per_class)
        arrays[f"{part}_images"] = np.ascontiguousarray(images[keep], dtype=np.uint8)
        arrays[f"{part}_labels"] = labels[keep].astype(np.uint8)
    arrays["class_names"] = np.array(FASHION_MNIST_CLASSES, dtype="<U16")
    np.savez_compressed(out, **arrays)
    for k, v in arrays.items():
        print(f"{k}: {v.shape} {v.dtype}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mimkit.data.build_embedded", description=__doc__)
    p.add_argument("idx_dir")
    p.add_argument("out")
    p.add_argument("--train-per-class", type=int, default=1000)
    p.add_argument("--test-per-class", type=int, default=200)
    a = p.parse_args(argv)
    build(a.idx_dir, a.out, a.train_per_class, a.test_per_class)


if __name__ == "__main__":
    main(sys.argv[1:])
