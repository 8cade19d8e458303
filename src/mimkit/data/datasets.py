"""Datasets returning ``(transform(PIL RGB image), int label)``.

All of them take ``subset`` (see :func:`per_class_subset`) and expose ``classes`` (class names)
and ``targets`` (labels of the kept samples, known without decoding any image).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import pickle
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, default_collate
from tqdm.auto import tqdm

from mimkit.data.idx import find_idx_file, read_idx
from mimkit.errors import ConfigError, DataError, MimkitWarning

log = logging.getLogger(__name__)

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

Subset = float | int | None


def _check_split(split: str, allowed: Sequence[str] = ("train", "val")) -> str:
    aliases = {"test": "val", "valid": "val", "validation": "val"}
    s = aliases.get(split, split)
    if s not in allowed:
        raise ConfigError(f"split {split!r} is not one of {', '.join(allowed)}")
    return s


def check_subset(subset: Subset) -> Subset:
    """Validate a ``subset`` value: None, a fraction in (0, 1], or a count >= 1 per class."""
    if subset is None:
        return None
    if isinstance(subset, bool) or not isinstance(subset, Real):
        raise ConfigError(f"subset {subset!r} must be a fraction in (0, 1] or a count >= 1")
    if isinstance(subset, Integral):
        if subset < 1:
            raise ConfigError(f"subset {subset} must be a count >= 1 (or a fraction in (0, 1])")
        return int(subset)
    subset = float(subset)
    if 0.0 < subset <= 1.0:
        return subset
    if subset > 1.0 and subset.is_integer():
        return int(subset)
    raise ConfigError(f"subset {subset} must be a fraction in (0, 1] or a whole count >= 1")


def per_class_subset(labels: Sequence[int] | np.ndarray, subset: Subset) -> np.ndarray:
    """Indices (ascending) of a deterministic per-class subset of ``labels``.

    ``subset=0.2`` keeps the first 20% (floor, at least 1) of each class, ``subset=50`` (an int)
    keeps the first 50 of each class, ``None`` keeps everything. "First" is index order, i.e.
    sorted file order for folders and file order for array data sets.
    """
    labels = np.asarray(labels, dtype=np.int64)
    subset = check_subset(subset)
    if subset is None:
        return np.arange(len(labels))
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, math.floor(len(idx) * subset)) if isinstance(subset, float) else subset
        keep[idx[:k]] = True
    return np.flatnonzero(keep)


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
        split = _check_split(split)
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
        split = _check_split(split)
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
        split = _check_split(split)
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
        split = _check_split(split, STL10_SPLITS)
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


BAD_IMAGE_MODES = ("skip", "error")


def _is_image(name: str, extensions: tuple[str, ...]) -> bool:
    return name.lower().endswith(extensions) and not name.startswith(".")


def scan_image_folder(
    folder: str | os.PathLike,
    class_to_idx: dict[str, int] | None = None,
    extensions: tuple[str, ...] | None = None,
    allow_empty_classes: bool = False,
) -> tuple[list[str], list[tuple[str, int]]]:
    """List ``folder/class/**/image`` files in sorted order (as torchvision's ``make_dataset``).

    Returns ``(classes, samples)``. With ``class_to_idx`` given (the train split's mapping, used
    for "val"), class folders absent from it are a DataError and missing ones are fine.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS

    exts = tuple(e.lower() for e in (extensions or IMG_EXTENSIONS))
    folder = Path(folder)
    try:
        dirs = sorted(e.name for e in os.scandir(folder) if e.is_dir() and e.name[0] != ".")
    except OSError as e:
        raise DataError(f"folder {folder} cannot be listed: {e.strerror}") from None
    if not dirs:
        if any(_is_image(n, exts) for n in os.listdir(folder)):
            raise DataError(
                f"folder {folder} has images but no class folders (expected {folder}/CLASS/IMAGE)"
            )
        raise DataError(f"folder {folder} has no images")
    if class_to_idx is None:
        class_to_idx = {c: i for i, c in enumerate(dirs)}
    else:
        unknown = [d for d in dirs if d not in class_to_idx]
        if unknown:
            raise DataError(
                f"folder {folder} has class folder {unknown[0]!r} that the train split lacks"
            )
    classes = sorted(class_to_idx, key=class_to_idx.__getitem__)
    samples: list[tuple[str, int]] = []
    empty = []
    # The root and every class folder count as seen: a link into them from elsewhere must not
    # read their images again, or under another class.
    seen = {_identity(p) for p in (folder, *(folder / c for c in dirs))}
    skipped: list[str] = []
    for c in dirs:
        n0 = len(samples)
        for root, fnames in sorted(walk_once(folder / c, seen, skipped)):
            for fname in sorted(fnames):
                if _is_image(fname, exts):
                    samples.append((os.path.join(root, fname), class_to_idx[c]))
        if len(samples) == n0:
            empty.append(c)
    if not samples:
        raise DataError(f"folder {folder} has class folders but no image files")
    if empty and not allow_empty_classes:
        raise DataError(f"class folder {folder / empty[0]} has no images")
    if skipped:
        warnings.warn(
            f"folder {folder}: {len(skipped)} folder(s) reached again through symbolic links "
            f"were read once only (first: {skipped[0]})",
            MimkitWarning,
            stacklevel=2,
        )
    return classes, samples


def _identity(path: str | os.PathLike) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def walk_once(
    top: str | os.PathLike, seen: set[tuple[int, int]], skipped: list[str]
) -> Iterator[tuple[str, list[str]]]:
    """``(folder, file names)`` under ``top`` like ``os.walk(followlinks=True)``, but each real
    folder once: a link back to a parent would otherwise repeat the tree until the path grows
    too long. ``seen`` holds the (device, inode) of folders already read (or reserved, like
    the other class folders); sub-folders found in it are skipped and listed in ``skipped``."""
    for i, (root, dirnames, fnames) in enumerate(os.walk(top, followlinks=True)):
        key = _identity(root)
        if i > 0 and key in seen:
            skipped.append(root)
            dirnames.clear()
            continue
        seen.add(key)
        dirnames.sort()  # a fixed order decides which path of a linked folder is kept
        yield root, fnames


def _open_rgb(path: str) -> Image.Image:
    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
        return to_rgb(img)


_DEEP_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit grayscale (I: as PNG/TIFF give)


def to_rgb(img: Image.Image) -> Image.Image:
    """An RGB image. PIL's own conversion clips wide grayscale to 0-255, so it is scaled
    first: 16-bit grayscale by its bit depth (65535 -> 255; clipped, almost every pixel
    would be white); 32-bit float (mode F) from [0, 1], the usual range of float images,
    when its values lie there (clipped, it would be almost black), else from [0, its
    maximum] when that is above 255; NaN reads as 0."""
    if img.mode in _DEEP_GRAY:
        img = _gray8(np.asarray(img, dtype=np.float64) / 257.0)
    elif img.mode == "F":
        wide = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(wide.max(initial=0.0))
        img = _gray8(wide * (255.0 if top <= 1.0 else 255.0 / max(top, 255.0)))
    return img.convert("RGB") if img.mode != "RGB" else img


def _gray8(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def _unreadable(path: str, err: Exception) -> str:
    reason = str(err).splitlines()[0] if str(err).strip() else ""
    return f"image {path} cannot be read ({type(err).__name__}{': ' if reason else ''}{reason})"


def check_header(path: str) -> None:
    """Raise (one of _READ_ERRORS) unless ``path`` looks like a readable image: PIL parses its
    header and ``verify()`` walks its structure (every chunk's CRC for PNG) without decoding
    pixels; a PNG's compressed pixel stream is also inflated (checksums pass on a stream
    damaged before they were computed). Fast enough to run on every file before training
    (benchmarks/bench_image_check.py)."""
    with Image.open(path) as img:
        png = img.format == "PNG"
        img.verify()
    if png:
        check_png_stream(path)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_INFLATE_STEP = 1 << 22  # bytes of pixels inflated at a time: memory stays bounded


def check_png_stream(path: str) -> None:
    """OSError unless the zlib stream of a PNG's IDAT chunks inflates to its end with a
    matching checksum (pixels are inflated and dropped, never unfiltered or kept)."""
    inflate = zlib.decompressobj()
    with open(path, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            raise OSError("not a PNG file")
        while header := f.read(8):
            if len(header) < 8:
                break
            length, kind = struct.unpack(">I4s", header)
            data = f.read(length)
            f.seek(4, os.SEEK_CUR)  # the CRC, checked by verify()
            if kind == b"IEND":
                break
            if kind != b"IDAT":
                continue
            try:
                while data and not inflate.eof:
                    inflate.decompress(data, _INFLATE_STEP)
                    data = inflate.unconsumed_tail
            except zlib.error as err:
                raise OSError(f"damaged compressed image data ({err})") from None
    if not inflate.eof:
        raise OSError("compressed image data ends early")


_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class ImageFolderDataset(Dataset):
    """An ImageFolder split (``folder/class/xxx.jpg``) with a per-class subset and bad-image policy.

    ``on_bad_image="skip"``: an unreadable image is replaced by the next readable one (counted in
    ``num_bad``, the first one met while loading warned about), or, with
    ``leave_out_unreadable`` (evaluation: a substitute would count twice), its item is None,
    which :func:`collate_readable` drops; ``"error"``: DataError naming the file. Counts are
    per process (each DataLoader worker has its own).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        transform: Callable | None = None,
        subset: Subset = None,
        on_bad_image: str = "skip",
        class_to_idx: dict[str, int] | None = None,
        extensions: tuple[str, ...] | None = None,
    ):
        if on_bad_image not in BAD_IMAGE_MODES:
            raise ConfigError(f"on_bad_image {on_bad_image!r} is not one of skip, error")
        self.root = Path(folder)
        self.transform = transform
        self.on_bad_image = on_bad_image
        self.classes, samples = scan_image_folder(
            folder, class_to_idx, extensions, allow_empty_classes=class_to_idx is not None
        )
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        keep = per_class_subset([s[1] for s in samples], subset)
        self.samples = [samples[i] for i in keep]
        self.num_bad = 0
        self.bad_files: set[str] = set()
        self.warned_at_load = False  # the up-front check's warning does not cover later ones
        self.leave_out_unreadable = False

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [s[1] for s in self.samples]

    @property
    def imgs(self) -> list[tuple[str, int]]:
        return self.samples

    def _bad(self, path: str, err: Exception, done: str = "skipped") -> None:
        msg = _unreadable(path, err)
        if self.on_bad_image == "error":
            raise DataError(msg) from None
        if path not in self.bad_files:
            self.bad_files.add(path)
            self.num_bad += 1
            if not self.warned_at_load:
                self.warned_at_load = True
                warnings.warn(
                    f"{msg}: {done} (later unreadable images are {done} without a word)",
                    MimkitWarning,
                    stacklevel=3,
                )
            log.debug("%s: %s (%d unreadable so far)", msg, done, self.num_bad)

    def load(self, i: int) -> tuple[Image.Image, int]:
        """The RGB image and label of sample ``i``; unreadable images as ``on_bad_image`` says."""
        n = len(self.samples)
        for k in range(min(n, 1000)):
            path, label = self.samples[(i + k) % n]
            try:
                return _open_rgb(path), label
            except _READ_ERRORS as e:
                self._bad(path, e)
        raise DataError(f"folder {self.root}: no readable image found after sample {i}")

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        if self.leave_out_unreadable:
            path, label = self.samples[i % len(self)]
            try:
                img = _open_rgb(path)
            except _READ_ERRORS as e:
                self._bad(path, e, "left out")
                return None
        else:
            img, label = self.load(i % len(self))
        if self.transform is not None:
            img = self.transform(img)
        return img, label

    def check_images(self, n: int | None = None) -> int:
        """Check the header of every file (or of the first ``n``) before any training; return
        how many are unreadable. "error": DataError naming the first one. "skip": they leave
        the data set, with one warning giving their count and the first few; DataError when
        none is readable. About 0.1-0.25 ms per small file on a loaded 2-core machine
        (benchmarks/bench_image_check.py; a PNG costs about 3/4 of its full decode).
        """
        checked = self.samples if n is None else self.samples[: max(1, n)]
        keep, bad = [], []
        for path, label in tqdm(
            checked, desc="checking images", unit="file", disable=len(checked) < 20_000
        ):
            try:
                check_header(path)
                keep.append((path, label))
            except _READ_ERRORS as e:
                if self.on_bad_image == "error":
                    raise DataError(
                        f"{_unreadable(path, e)}; remove or replace it, or set "
                        "data.on_bad_image=skip"
                    ) from None
                bad.append(path)
        if checked and not keep:
            raise DataError(f"folder {self.root}: none of its {len(checked)} images can be read")
        if bad:
            self.samples = keep + self.samples[len(checked) :]
            self.num_bad += len(set(bad) - self.bad_files)
            self.bad_files.update(bad)
            first = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
            warnings.warn(
                f"skipping {len(bad)} unreadable image(s) of {len(checked)} in {self.root}: "
                f"{first}",
                MimkitWarning,
                stacklevel=2,
            )
        return len(bad)


def leave_out_unreadable(dataset: Dataset) -> Dataset:
    """``dataset`` for evaluation: an image folder's unreadable images (skip mode) become
    None items, which loaders built with :func:`collate_readable` drop, instead of copies of
    the next image that would count twice. Other data sets hold decoded arrays."""
    if isinstance(dataset, ImageFolderDataset):
        dataset.leave_out_unreadable = True
    return dataset


def collate_readable(batch: list) -> object:
    """A loader's ``collate_fn`` for evaluation: the readable items, collated (None when a
    batch holds none)."""
    kept = [item for item in batch if item is not None]
    return default_collate(kept) if kept else None
