"""Data sets held in arrays: the embedded Fashion-MNIST subset, IDX files (MNIST-style),
CIFAR-10/100 and STL-10 binaries. Each returns ``(transform(PIL RGB image), int label)``, takes
``subset`` (see :func:`mimkit.data.subsets.per_class_subset`) and exposes ``classes`` and
``targets`` (labels of the kept samples, known without decoding any image)."""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from mimkit.data.idx import find_idx_file, read_idx
from mimkit.data.subsets import Subset, per_class_subset
from mimkit.errors import ConfigError, DataError

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(i) for i in range(10))
EMBEDDED_ASSET = "fashion_mnist_subset.npz"


def check_split(split: str, allowed: Sequence[str] = ("train", "val")) -> str:
    aliases = {"test": "val", "valid": "val", "validation": "val"}
    s = aliases.get(split, split)
    if s not in allowed:
        raise ConfigError(f"split {split!r} is not one of {', '.join(allowed)}")
    return s



class _ArrayDataset(Dataset):
    """Images held in (or memory-mapped from) a uint8 array ``[N,H,W]`` or ``[N,H,W,3]``."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str],
        transform: Callable | None,
        subset: Subset,
        hwc_from: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.transform = transform
        self.indices = per_class_subset(self.labels, subset)
        self._hwc = hwc_from

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> list[int]:
        return self.labels[self.indices].tolist()

    def pixels(self, items: Sequence[int]) -> np.ndarray:
        """Items ``items`` as one uint8 array ``[B, H, W, C]``, C = 1 for a grayscale source
        and 3 otherwise (for augmentation of whole batches, ``data.batch_augment``)."""
        arrs = [np.asarray(self.images[int(self.indices[i])]) for i in items]
        if self._hwc is not None:
            arrs = [self._hwc(a) for a in arrs]
        out = np.stack(arrs)
        return out[..., None] if out.ndim == 3 else out

    def labels_of(self, items: Sequence[int]) -> np.ndarray:
        return self.labels[self.indices[np.asarray(items, dtype=np.int64)]]

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        arr = np.asarray(self.images[j])
        if self._hwc is not None:
            arr = self._hwc(arr)
        img = Image.fromarray(np.ascontiguousarray(arr))
        if img.mode != "RGB":
            img = img.convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[j])


@functools.lru_cache(maxsize=1)
def _embedded_arrays() -> dict[str, np.ndarray]:
    ref = resources.files("mimkit.data") / "assets" / EMBEDDED_ASSET
    try:
        with ref.open("rb") as f, np.load(f, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DataError(f"embedded data set {EMBEDDED_ASSET} cannot be read: {e}") from None


def embedded_asset_path() -> Path:
    """Path of the shipped ``.npz`` file."""
    return Path(str(resources.files("mimkit.data") / "assets" / EMBEDDED_ASSET))


class EmbeddedFashionMNIST(_ArrayDataset):
    """The Fashion-MNIST subset shipped with mimkit (10,000 train / 2,000 val, 28x28, 10 classes).

    ``split="val"`` is the test part. Images are grayscale and returned as RGB PIL images.
    """

    def __init__(
        self, split: str = "train", transform: Callable | None = None, subset: Subset = None
    ):
        split = check_split(split)
        self.split = split
        d = _embedded_arrays()
        part = "train" if split == "train" else "test"
        classes = (
            [str(c) for c in d["class_names"]] if "class_names" in d else FASHION_MNIST_CLASSES
        )
        super().__init__(d[f"{part}_images"], d[f"{part}_labels"], classes, transform, subset)


class IdxDataset(_ArrayDataset):
    """A Fashion-MNIST / MNIST style directory of IDX files (``.gz`` or plain).

    ``split="train"`` reads ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte``, ``"val"``
    the ``t10k-*`` files. Also found under ``root/raw`` and torchvision's
    ``root/FashionMNIST/raw``. ``classes`` defaults to the Fashion-MNIST class names.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        subset: Subset = None,
        classes: Sequence[str] | None = None,
    ):
        split = check_split(split)
        self.root, self.split = Path(root), split
        part = "train" if split == "train" else "test"
        img_path, lab_path = idx_files(root, part)
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim not in (3, 4) or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"IDX files {img_path} {tuple(images.shape)} and {lab_path} "
                f"{tuple(labels.shape)} do not match"
            )
        if images.dtype != np.uint8:
            raise DataError(f"IDX file {img_path} holds {images.dtype}, expected uint8 images")
        n_cls = int(labels.max()) + 1 if len(labels) else 0
        if classes is None:
            classes = FASHION_MNIST_CLASSES if n_cls <= 10 else [str(i) for i in range(n_cls)]
        super().__init__(images, labels, classes, transform, subset)


def idx_files(root: str | os.PathLike, part: str) -> tuple[Path, Path]:
    """The (images, labels) IDX files of ``part`` ("train" or "test"), or DataError."""
    img, lab = find_idx_file(root, part, "images"), find_idx_file(root, part, "labels")
    prefix = "train" if part == "train" else "t10k"
    if img is None:
        raise DataError(f"data path {root} has no {prefix}-images-idx3-ubyte[.gz] file")
    if lab is None:
        raise DataError(f"data path {root} has no {prefix}-labels-idx1-ubyte[.gz] file")
    return img, lab


_CIFAR = {
    10: dict(
        folder="cifar-10-batches-py",
        train=[f"data_batch_{i}" for i in range(1, 6)],
        test=["test_batch"],
        meta="batches.meta",
        names="label_names",
        labels="labels",
    ),
    100: dict(
        folder="cifar-100-python",
        train=["train"],
        test=["test"],
        meta="meta",
        names="fine_label_names",
        labels="fine_labels",
    ),
}


def cifar_files(root: str | os.PathLike, n_classes: int, part: str) -> tuple[Path, list[Path]]:
    """(meta file, batch files) of torchvision's CIFAR layout under or in ``root``."""
    info = _CIFAR[n_classes]
    root = Path(root)
    folder = root / info["folder"] if (root / info["folder"]).is_dir() else root
    files = [folder / n for n in [info["meta"], *info[part]]]
    for f in files:
        if not f.is_file():
            raise DataError(
                f"CIFAR-{n_classes} file {f} does not exist (expected torchvision's "
                f"{info['folder']}/ layout under {root})"
            )
    return files[0], files[1:]


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles by format; never let one name anything but numpy arrays."""

    ALLOWED = {
        (module, name)
        for module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "ndarray", "dtype", "scalar")
    } | {("_codecs", "encode")}  # how protocol-2 pickles from Python 3 spell bytes

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _CifarUnpickler(f, encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise DataError(f"CIFAR file {path} cannot be read: {type(e).__name__}: {e}") from None


class CifarDataset(_ArrayDataset):
    """CIFAR-10 / CIFAR-100 in torchvision's on-disk format (``cifar-10-batches-py/`` ...).

    Reads the pickled batches directly, like ``torchvision.datasets.CIFAR10`` but without its
    md5 check (it re-hashes 170 MB on every construction, and rejects any re-packed copy).
    ``root`` may be the folder holding ``cifar-10-batches-py`` or that folder itself.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        subset: Subset = None,
        num_classes: int = 10,
    ):
        if num_classes not in _CIFAR:
            raise ConfigError(f"CIFAR num_classes must be 10 or 100, not {num_classes}")
        split = check_split(split)
        self.root, self.split = Path(root), split
        info = _CIFAR[num_classes]
        meta, batches = cifar_files(root, num_classes, "train" if split == "train" else "test")
        data, labels = [], []
        for b in batches:
            entry = _unpickle(b)
            try:
                data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.extend(entry[info["labels"]])
            except (KeyError, ValueError) as e:
                raise DataError(f"CIFAR file {b} is not a CIFAR batch: {e}") from None
        try:
            classes = list(_unpickle(meta)[info["names"]])
        except KeyError:
            raise DataError(f"CIFAR file {meta} has no {info['names']}") from None
        images = np.concatenate(data).transpose(0, 2, 3, 1)
        super().__init__(images, np.asarray(labels), classes, transform, subset)


STL10_SPLITS = ("train", "val", "unlabeled", "train+unlabeled")


def stl10_files(root: str | os.PathLike, split: str) -> list[tuple[Path, Path | None]]:
    """(images, labels-or-None) binary files of an STL-10 ``split`` under ``root``."""
    root = Path(root)
    folder = root / "stl10_binary" if (root / "stl10_binary").is_dir() else root
    parts = {
        "train": [("train_X.bin", "train_y.bin")],
        "val": [("test_X.bin", "test_y.bin")],
        "unlabeled": [("unlabeled_X.bin", None)],
    }
    parts["train+unlabeled"] = parts["train"] + parts["unlabeled"]
    out = []
    for x, y in parts[split]:
        for name in (x, y):
            if name is not None and not (folder / name).is_file():
                raise DataError(
                    f"STL-10 file {folder / name} does not exist "
                    f"(expected torchvision's stl10_binary/ layout under {root})"
                )
        out.append((folder / x, folder / y if y else None))
    return out


class Stl10Dataset(Dataset):
    """STL-10 in torchvision's binary format (``stl10_binary/``), memory-mapped (96x96 RGB).

    Splits: "train", "val" (the test part), "unlabeled" and "train+unlabeled" (label -1 for
    unlabeled images). No md5 check, unlike torchvision's ``STL10``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        subset: Subset = None,
    ):
        split = check_split(split, STL10_SPLITS)
        self.root, self.split, self.transform = Path(root), split, transform
        self._files: list[tuple[Path, int]] = []
        self._parts: list[np.ndarray] = []
        labels = []
        for x, y in stl10_files(root, split):
            size = x.stat().st_size
            if size % (3 * 96 * 96):
                raise DataError(f"STL-10 file {x} has {size} bytes, not a multiple of 3*96*96")
            self._files.append((x, size // (3 * 96 * 96)))
            mm = self._open(len(self._files) - 1)
            if y is not None:
                lab = np.fromfile(y, dtype=np.uint8).astype(np.int64) - 1
                if len(lab) != len(mm):
                    raise DataError(f"STL-10 files {x} and {y} hold different numbers of images")
            else:
                lab = np.full(len(mm), -1, dtype=np.int64)
            self._parts.append(mm)
            labels.append(lab)
        self.labels = np.concatenate(labels)
        self._offsets = np.cumsum([0] + [len(p) for p in self._parts])
        names = stl10_files(root, split)[0][0].parent / "class_names.txt"
        self.classes = (
            names.read_text().split()
            if names.is_file()
            else [
                "airplane",
                "bird",
                "car",
                "cat",
                "deer",
                "dog",
                "horse",
                "monkey",
                "ship",
                "truck",
            ]
        )
        labeled = self.labels >= 0
        idx = np.arange(len(self.labels))
        # Per-class subset over labelled images; unlabelled ones are subset as one group.
        keys = np.where(labeled, self.labels, len(self.classes))
        self.indices = idx[per_class_subset(keys, subset)]

    def _open(self, k: int) -> np.ndarray:
        path, n = self._files[k]
        return np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 3, 96, 96))

    def __getstate__(self):  # pickled for spawned workers: reopen the files, don't copy them
        state = self.__dict__.copy()
        state["_parts"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._parts = [self._open(k) for k in range(len(self._files))]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> list[int]:
        return self.labels[self.indices].tolist()

    def _hwc(self, j: int) -> np.ndarray:
        """Image ``j`` of the files as ``[96, 96, 3]`` (they store it channel-first and
        column-major)."""
        p = int(np.searchsorted(self._offsets, j, side="right")) - 1
        return np.asarray(self._parts[p][j - self._offsets[p]]).transpose(2, 1, 0)

    def pixels(self, items: Sequence[int]) -> np.ndarray:
        """Items ``items`` as one uint8 array ``[B, 96, 96, 3]`` (``data.batch_augment``)."""
        return np.stack([self._hwc(int(self.indices[i])) for i in items])

    def labels_of(self, items: Sequence[int]) -> np.ndarray:
        return self.labels[self.indices[np.asarray(items, dtype=np.int64)]]

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        img = Image.fromarray(np.ascontiguousarray(self._hwc(j)))
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[j])
