"""Tiny copies of every kind of data set mimkit reads, written on the fly in their real
on-disk formats: image folders (mixed sizes, PNG and JPEG), ImageNet's tree, IDX, CIFAR-10/100
and STL-10. Train splits hold 40 images (more than the main config's batch of 32), val splits
10, in 2 to 100 classes."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from mimkit.data import write_idx

TRAIN, VAL = 40, 10


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _photo(rng: np.random.Generator, height: int, width: int, gray: bool = False) -> Image.Image:
    """A smooth random picture (a JPEG of pure noise is mostly artefacts)."""
    small = rng.integers(0, 256, (4, 4) if gray else (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)


def image_folder(
    root: Path,
    splits: tuple[str, ...] = ("train", "val"),
    classes: tuple[str, ...] = ("cat", "dog"),
    counts: tuple[int, ...] = (TRAIN, VAL),
    ext: Callable[[int], str] = lambda i: ".png" if i % 2 else ".jpg",
    sizes: tuple[int, int] = (12, 48),
) -> Path:
    """``root/SPLIT/CLASS/IMAGE`` (or ``root/CLASS/IMAGE`` with ``splits=("",)``) of
    pictures of random sizes and shapes, PNG and JPEG, some grayscale."""
    rng = _rng()
    for split, count in zip(splits, counts, strict=True):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count // len(classes) + (c < count % len(classes))):
                h, w = (int(v) for v in rng.integers(*sizes, 2))
                _photo(rng, h, w, gray=i % 5 == 4).save(folder / f"{name}_{i:03d}{ext(i)}")
    return root


def plain_folder(root: Path) -> Path:
    """Class folders of images and nothing else: no train/ or val/."""
    return image_folder(root, splits=("",), counts=(TRAIN,))


def imagenet_tree(root: Path) -> Path:
    """ImageNet's layout: ``train/nXXXXXXXX/nXXXXXXXX_N.JPEG`` and the same under ``val/``,
    three synsets, photos of 40-80 px."""
    return image_folder(
        root,
        classes=("n01440764", "n01443537", "n01484850"),
        ext=lambda i: ".JPEG",
        sizes=(40, 80),
    )


def idx_folder(root: Path) -> Path:
    """Fashion-MNIST's files: ``train-*`` (gzipped) and ``t10k-*`` IDX files of 28x28 images."""
    rng = _rng(1)
    root.mkdir(parents=True, exist_ok=True)
    for part, n, sx in (("train", TRAIN, ".gz"), ("t10k", VAL, "")):
        images = rng.integers(0, 256, (n, 28, 28), np.uint8)
        write_idx(root / f"{part}-images-idx3-ubyte{sx}", images)
        write_idx(root / f"{part}-labels-idx1-ubyte{sx}", np.arange(n, dtype=np.uint8) % 10)
    return root


def dump_pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar10_folder(root: Path, per_batch: int = TRAIN // 5) -> Path:
    """torchvision's ``cifar-10-batches-py/``: 5 train batches and a test batch."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = _rng()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        n = VAL if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [(k + j) % 10 for j in range(n)]
        batch = {"batch_label": name, "labels": labels, "data": data, "filenames": []}
        dump_pickle(d / name, batch)
    classes = ["airplane", "automobile", "bird", "cat", "deer"]
    classes += ["dog", "frog", "horse", "ship", "truck"]
    dump_pickle(d / "batches.meta", {"label_names": classes, "num_cases_per_batch": per_batch})
    return root


def cifar100_folder(root: Path) -> Path:
    """torchvision's ``cifar-100-python/``: train, test and meta."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    rng = _rng()
    for name, n in (("train", TRAIN), ("test", VAL)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        dump_pickle(d / name, {"data": data, "fine_labels": fine, "coarse_labels": [0] * n})
    dump_pickle(d / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    return root


def stl10_folder(root: Path) -> Path:
    """torchvision's ``stl10_binary/``: train, test and unlabeled binaries of 96x96 images."""
    d = root / "stl10_binary"
    d.mkdir(parents=True)
    rng = _rng()
    for part, n in (("train", TRAIN), ("test", VAL), ("unlabeled", 2)):
        rng.integers(0, 256, n * 3 * 96 * 96, dtype=np.uint8).tofile(d / f"{part}_X.bin")
        if part != "unlabeled":
            (np.arange(n, dtype=np.uint8) % 10 + 1).tofile(d / f"{part}_y.bin")
    return root


# kind -> how to write it under a folder (None: the embedded set, nothing to write)
DATA_KINDS: dict[str, Callable[[Path], Path] | None] = {
    "image-folder": image_folder,
    "plain-folder": plain_folder,
    "imagenet-tree": imagenet_tree,
    "idx": idx_folder,
    "cifar10": cifar10_folder,
    "cifar100": cifar100_folder,
    "stl10": stl10_folder,
    "embedded": None,
}


def data_spec(kind: str, tmp_path: Path) -> str:
    """The ``--data`` value of a freshly written data set of ``kind``: its plain folder, whose
    kind mimkit recognises ("embedded" for the embedded set)."""
    write = DATA_KINDS[kind]
    return "embedded" if write is None else str(write(tmp_path / kind))
