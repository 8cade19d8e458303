"""Images for ``mimkit masks``: files and folders given on the command line, or the first
samples of a data set. Everything is read (and checked) before any picture is written."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from mimkit.data.image_folder import to_rgb
from mimkit.errors import DataError

_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclass
class Inputs:
    """Normalised images ``[B, 3, H, W]``, a file-name stem and a caption for each."""

    images: Tensor
    names: list[str]
    captions: list[str]


def _image_extensions() -> tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return tuple(e.lower() for e in IMG_EXTENSIONS)


def expand_image_paths(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; folders become their image files (recursively, sorted). DataError for a
    missing path or a folder without images."""
    exts = _image_extensions()
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise DataError(f"{p}: no such file or folder")
        if p.is_dir():
            found = [
                Path(root) / f
                for root, _, files in sorted(os.walk(p, followlinks=True))
                for f in sorted(files)
                if f.lower().endswith(exts) and not f.startswith(".")
            ]
            if not found:
                raise DataError(f"folder {p} has no image files")
            out += found
        else:
            out.append(p)
    return out


def _open_rgb(path: Path) -> Image.Image:
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()
            return to_rgb(img)
    except _READ_ERRORS as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"{path}: cannot read it as an image ({first[:200]})") from None


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "image"


def unique_names(stems: Sequence[str]) -> list[str]:
    """File-name-safe stems, with ``_2``, ``_3`` ... added to repeats."""
    seen: dict[str, int] = {}
    out = []
    for s in stems:
        s = _stem(s)
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}_{seen[s]}")
    return out


def load_image_files(paths: Sequence[str | os.PathLike], transform, limit: int | None) -> Inputs:
    files = expand_image_paths(paths)
    if limit is not None:
        files = files[:limit]
    images = [transform(_open_rgb(f)) for f in files]
    return Inputs(
        torch.stack(images), unique_names([f.stem for f in files]), [f.name for f in files]
    )


def load_dataset_samples(spec: str, split: str, count: int, transform) -> Inputs:
    """The first ``count`` images of a data set split (fewer if the split is smaller)."""
    from mimkit.data import build_dataset, parse_data_spec

    kind, _ = parse_data_spec(spec)
    dataset = build_dataset(spec, split, transform)
    n = min(count, len(dataset))
    if n == 0:
        raise DataError(f"data set {spec!r} split {split!r} is empty")
    classes = getattr(dataset, "classes", None)
    images, names, captions = [], [], []
    for i in range(n):
        x, label = dataset[i]
        images.append(x)
        names.append(f"{kind}_{split}_{i:05d}")
        cls = classes[label] if classes and 0 <= label < len(classes) else str(label)
        captions.append(f"{kind} {split} #{i} ({cls})")
    return Inputs(torch.stack(images), unique_names(names), captions)
