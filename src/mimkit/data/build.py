"""``build_dataset``: one entry point for every data source, plus fast checks and helpers.
Each source kind is one record in :data:`SOURCES` (how to check, build and fingerprint a
split, its normalisation), so a new kind is one entry there.

Specs: ``"embedded"`` (default), ``"fashion-mnist:DIR"`` / ``"mnist:DIR"`` (IDX files),
``"cifar10:DIR"``, ``"cifar100:DIR"``, ``"stl10:DIR"``, ``"folder:DIR"`` (ImageFolder:
``DIR/train/CLASS/IMG`` and ``DIR/val/...``, or ``DIR/CLASS/IMG`` as the train split when
``DIR`` has no ``train/``) or a plain path, whose kind is recognised from its files
(``detect.py``).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset
from torch.utils.data import Subset as TorchSubset

from mimkit.data.array_datasets import (
    MNIST_CLASSES,
    STL10_SPLITS,
    CifarDataset,
    EmbeddedFashionMNIST,
    IdxDataset,
    Stl10Dataset,
    check_split,
    cifar_files,
    embedded_asset_path,
    idx_files,
    stl10_files,
)
from mimkit.data.detect import LAYOUTS, NAMES, detect_kind
from mimkit.data.image_folder import (
    BAD_IMAGE_MODES,
    ImageFolderDataset,
    scan_image_folder,
    walk_once,
)
from mimkit.data.subsets import check_subset
from mimkit.data.transforms import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
    Stats,
)
from mimkit.errors import ConfigError, DataError


def parse_data_spec(spec: str | os.PathLike | None) -> tuple[str, Path | None]:
    """``(kind, path)`` of a data spec; ``path`` is None for "embedded"."""
    s = str(spec).strip() if spec is not None else "embedded"
    if s in ("", "embedded"):
        return "embedded", None
    kind, sep, rest = s.partition(":")
    if sep and kind.lower() in SOURCES and kind.lower() != "embedded":
        if not rest:
            raise DataError(f"data spec {s!r} names no directory")
        return kind.lower(), Path(rest).expanduser()
    path = Path(s).expanduser()
    return detect_kind(path) or "folder", path


def describe_data_spec(spec: str | os.PathLike | None) -> str:
    """The spec as given, with what was recognised in a plain folder (for start-up lines)."""
    kind, path = parse_data_spec(spec)
    if kind in NAMES and not _explicit(spec):
        return f"{spec} ({NAMES[kind]}, recognised; or say {kind}:{path})"
    return str(spec or "embedded")


def holds_one_size_array(spec: str | os.PathLike | None) -> bool:
    """Whether the data set of ``spec`` is an array of images of one size (embedded, IDX,
    CIFAR, STL-10), which hands out whole batches of pixels; image folders are not."""
    return SOURCES[parse_data_spec(spec)[0]].one_size_array


def default_normalization(spec: str | os.PathLike | None = "embedded") -> Stats:
    """``(mean, std)`` suited to a data spec: its source's statistics (ImageNet's unless the
    source knows better; a plain folder's kind is recognised from its files)."""
    return SOURCES[parse_data_spec(spec)[0]].normalization


def augment_whole_batches(setting: bool | str, spec: str) -> tuple[bool, str]:
    """Whether training augments whole batches with tensor operations (True) or image by
    image with PIL, and why, in words for the start-up line. ``setting``: the config's
    ``data.batch_augment`` (true, false or auto). ConfigError when ``true`` asks for whole
    batches of data that cannot give them (an image folder's images differ in size)."""
    array = holds_one_size_array(spec)
    if setting == "auto":
        if array:
            return True, "whole batches with tensor operations (auto: images of one size)"
        return False, "image by image with PIL (auto: an image folder's sizes differ)"
    if setting and not array:
        raise ConfigError(
            f"data.batch_augment: true needs images of one size in an array (embedded, IDX, "
            f"CIFAR, STL-10), and {spec!r} is an image folder: set it to auto or false "
            f"(image by image)"
        )
    if setting:
        return True, "whole batches with tensor operations (data.batch_augment: true)"
    return False, "image by image with PIL (data.batch_augment: false)"


def _explicit(spec: str | os.PathLike | None) -> bool:
    """Whether ``spec`` names its kind with a prefix (``cifar10:DIR``, ``folder:DIR`` ...)."""
    kind, sep, _ = str(spec or "").strip().partition(":")
    return bool(sep) and kind.lower() in SOURCES


def _check_dir(path: Path) -> None:
    if not path.exists():
        raise DataError(f"data path {path} does not exist")
    if not path.is_dir():
        raise DataError(f"data path {path} is not a directory")


def image_folder_split(root: str | os.PathLike, split: str) -> Path:
    """Folder of ``split`` in an ImageFolder tree: ``root/train``, ``root/val`` or ``root``."""
    root = Path(root)
    _check_dir(root)
    split = check_split(split)
    has_layout = (root / "train").is_dir() or (root / "val").is_dir()
    if not has_layout:
        if split == "train":
            return root
        raise DataError(f"data path {root} has no val split ({root / 'val'} does not exist)")
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"data path {root} has no {split} split ({folder} does not exist)")
    return folder


def _first_image(folder: Path) -> bool:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    for _, fnames in walk_once(folder, set(), []):
        if any(f.lower().endswith(IMG_EXTENSIONS) and f[0] != "." for f in fnames):
            return True
    return False


def validate_data_spec(spec: str | os.PathLike | None = "embedded", split: str = "train") -> None:
    """Fail fast with DataError if ``spec``/``split`` cannot give a data set; reads no images."""
    kind, path = parse_data_spec(spec)
    source = SOURCES[kind]
    split = check_split(split, source.splits)
    if path is not None:
        _check_dir(path)
    try:
        source.check(path, split)
    except DataError as err:
        if kind != "folder" or _explicit(spec):
            raise
        # A plain folder that is not an image folder: say what else it could have been.
        raise DataError(f"{err}; looked for {'; '.join(LAYOUTS)}") from None


def _check_image_folder(path: Path, split: str) -> None:
    folder = image_folder_split(path, split)
    classes = [e for e in os.scandir(folder) if e.is_dir() and e.name[0] != "."]
    if not classes:
        scan_image_folder(folder)  # raises the right "no images"/"no class folders" error
    if not any(_first_image(Path(c.path)) for c in classes):
        raise DataError(f"folder {folder} has class folders but no image files")


def build_dataset(
    spec: str | os.PathLike | None = "embedded",
    split: str = "train",
    transform: Callable | None = None,
    *,
    subset: float | int | None = None,
    on_bad_image: str = "skip",
) -> Dataset:
    """The data set named by ``spec`` (see module docstring); items are ``(transform(img), label)``.

    ``split``: "train" or "val" ("val" is the test part of Fashion-MNIST/CIFAR/STL-10; STL-10
    also takes "unlabeled" and "train+unlabeled"). ``subset``: a fraction in (0, 1] or a count
    per class (the first ones, in sorted file order). ``on_bad_image``: "skip" or "error"
    (ImageFolder only).
    """
    kind, path = parse_data_spec(spec)
    subset = check_subset(subset)
    if on_bad_image not in BAD_IMAGE_MODES:
        raise ConfigError(f"on_bad_image {on_bad_image!r} is not one of skip, error")
    if kind != "embedded":
        validate_data_spec(spec, split)
    return SOURCES[kind].build(path, split, transform, subset, on_bad_image)


def _unwrap(dataset: Dataset) -> Dataset:
    while isinstance(dataset, TorchSubset) and not hasattr(dataset, "targets"):
        dataset = dataset.dataset
    return dataset


def dataset_labels(dataset: Dataset) -> list[int]:
    """Labels of every item, without decoding images (iterates only for unknown data sets)."""
    if isinstance(dataset, TorchSubset):
        labels = dataset_labels(dataset.dataset)
        return [labels[i] for i in dataset.indices]
    if isinstance(dataset, ConcatDataset):
        return [lab for d in dataset.datasets for lab in dataset_labels(d)]
    for attr in ("targets", "labels"):
        labels = getattr(dataset, attr, None)
        if labels is not None and len(labels) == len(dataset):
            return [int(x) for x in labels]
    warnings.warn(f"{type(dataset).__name__} has no targets: loading every item", stacklevel=2)
    return [int(dataset[i][1]) for i in range(len(dataset))]


def require_classes(dataset: Dataset, what: str) -> None:
    """DataError unless ``dataset`` has labelled images of at least 2 classes: with one, every
    classifier and every k-NN is right on every image, and its 100 % means nothing."""
    present = sorted({label for label in dataset_labels(dataset) if label >= 0})
    if len(present) >= 2:
        return
    names = getattr(_unwrap(dataset), "classes", None)
    which = f"only class {names[present[0]]!r}" if present and names else "fewer than 2 classes"
    raise DataError(f"{what} has {which}: telling classes apart needs at least 2")


def num_classes(dataset: Dataset) -> int:
    """Number of classes (from ``classes`` when known, else the largest label + 1)."""
    base = dataset
    while isinstance(base, TorchSubset):
        base = base.dataset
    if isinstance(base, ConcatDataset):
        return max(num_classes(d) for d in base.datasets)
    classes = getattr(base, "classes", None)
    if classes is not None:
        return len(classes)
    labels = dataset_labels(dataset)
    return max(labels) + 1 if labels else 0


def dataset_fingerprint(
    spec: str | os.PathLike | None = "embedded",
    split: str = "train",
    subset: float | int | None = None,
) -> str:
    """A short stable hash (16 hex digits) of what makes up a split, for caching features.

    Embedded: the asset's bytes. ImageFolder: the kept files' paths relative to the data root
    and their labels (not their contents). IDX/CIFAR/STL-10: the source files' names and sizes.
    Includes the kind, split and subset. Moving the data root does not change it.
    """
    kind, path = parse_data_spec(spec)
    subset = check_subset(subset)
    source = SOURCES[kind]
    split_n = check_split(split, source.splits)
    h = hashlib.sha256(f"mimkit-data-v1|{kind}|{split_n}|{subset!r}\n".encode())
    if kind != "embedded":
        validate_data_spec(spec, split)
    if source.fingerprint is not None:
        source.fingerprint(h, path, split_n, subset)
    else:
        for f in source.files(path, split_n):
            h.update(f"{f.name}\t{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


# -- the sources --------------------------------------------------------------------------
Builder = Callable[[Path, str, Callable | None, float | int | None, str], Dataset]


@dataclass(frozen=True)
class DataSource:
    """One kind of data set (the ``KIND:`` of a spec). ``files``: a split's source files,
    checked (their names and sizes are its fingerprint) unless the source has its own
    ``check`` and ``fingerprint``. Paths are None for the embedded set."""

    build: Builder  # (path, split, transform, subset, on_bad_image) -> Dataset
    files: Callable[[Path, str], list[Path]] | None = None
    check: Callable[[Path | None, str], None] | None = None
    fingerprint: Callable[[Any, Path | None, str, float | int | None], None] | None = None
    splits: tuple[str, ...] = ("train", "val")
    normalization: Stats = (IMAGENET_MEAN, IMAGENET_STD)
    # Images of one size in an array (``pixels``): whole batches can be augmented at once.
    one_size_array: bool = True

    def __post_init__(self) -> None:
        if self.check is None:  # checking a split is finding its files
            object.__setattr__(self, "check", lambda path, split: self.files(path, split))


def _part(split: str) -> str:
    return "train" if split == "train" else "test"  # val is the sets' test part


def _check_embedded(_: Path | None, __: str) -> None:
    if not embedded_asset_path().is_file():
        raise DataError(f"embedded data set {embedded_asset_path()} is missing")


def _hash_embedded(h: Any, *_: Any) -> None:
    h.update(embedded_asset_path().read_bytes())


def _build_folder(path: Path, split, transform, subset, on_bad_image) -> Dataset:
    folder = image_folder_split(path, split)
    class_to_idx = None
    train = path / "train"
    if check_split(split) == "val" and folder != path and train.is_dir():
        names = sorted(e.name for e in os.scandir(train) if e.is_dir() and e.name[0] != ".")
        class_to_idx = {name: i for i, name in enumerate(names)}
    return ImageFolderDataset(folder, transform, subset, on_bad_image, class_to_idx)


def _hash_folder(h: Any, path: Path, split: str, subset: float | int | None) -> None:
    # The kept files' paths relative to the data root and their labels, not their contents.
    for p, label in _build_folder(path, split, None, subset, "skip").samples:
        h.update(f"{os.path.relpath(p, path)}\t{label}\n".encode())


def _idx(classes: Any, stats: Stats) -> DataSource:
    return DataSource(
        lambda path, split, tf, subset, _: IdxDataset(path, split, tf, subset, classes=classes),
        files=lambda path, split: list(idx_files(path, _part(split))),
        normalization=stats,
    )


def _cifar(n: int) -> DataSource:
    def files(path: Path, split: str) -> list[Path]:
        meta, batches = cifar_files(path, n, _part(split))
        return [meta, *batches]

    def build(path: Path, split: str, tf: Callable | None, subset: Any, _: str) -> Dataset:
        return CifarDataset(path, split, tf, subset, n)

    return DataSource(build, files)


SOURCES: dict[str, DataSource] = {
    "embedded": DataSource(
        lambda _, split, tf, subset, __: EmbeddedFashionMNIST(split, tf, subset),
        check=_check_embedded,
        fingerprint=_hash_embedded,
        normalization=(FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    ),
    "fashion-mnist": _idx(None, (FASHION_MNIST_MEAN, FASHION_MNIST_STD)),
    "mnist": _idx(MNIST_CLASSES, (MNIST_MEAN, MNIST_STD)),
    "cifar10": _cifar(10),
    "cifar100": _cifar(100),
    "stl10": DataSource(
        lambda path, split, tf, subset, _: Stl10Dataset(path, split, tf, subset),
        files=lambda path, split: [f for pair in stl10_files(path, split) for f in pair if f],
        splits=STL10_SPLITS,
    ),
    "folder": DataSource(
        _build_folder, check=_check_image_folder, fingerprint=_hash_folder, one_size_array=False
    ),
}
