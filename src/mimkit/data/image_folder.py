"""Image folders (``folder/class/xxx.jpg``): the scan, the checks that find an unreadable or
corrupt image before any work starts, and the data set that skips or refuses such images."""

from __future__ import annotations

import logging
import os
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, default_collate
from tqdm.auto import tqdm

from mimkit.data.subsets import Subset, per_class_subset
from mimkit.errors import ConfigError, DataError, MimkitWarning

log = logging.getLogger(__name__)


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
