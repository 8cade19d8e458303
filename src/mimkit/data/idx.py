"""Read and write IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from mimkit.errors import DataError

# IDX type code -> numpy dtype (multi-byte types are big-endian).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}


def _open(path: str | os.PathLike, mode: str):
    return gzip.open(path, mode) if str(path).endswith(".gz") else open(path, mode)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (``.gz`` is decompressed) into a numpy array in native byte order."""
    try:
        with _open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"IDX file {path} cannot be read: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"IDX file {path} has no valid IDX header")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {path} is truncated")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != count * dtype.itemsize:
        raise DataError(
            f"IDX file {path} has {len(data) - header} data bytes, "
            f"expected {count * dtype.itemsize} for shape {shape}"
        )
    arr = np.frombuffer(data, dtype, count=count, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"dtype {array.dtype} cannot be stored in an IDX file")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    body = array.astype(_IDX_DTYPES[code], copy=False).tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with _open(path, "wb") as f:
        f.write(header + body)


_IDX_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def find_idx_file(root: str | os.PathLike, part: str, kind: str) -> Path | None:
    """Locate ``{train,t10k}-{images,labels}-idx?-ubyte[.gz]`` under ``root``.

    Looks in ``root``, ``root/raw`` and torchvision's ``root/{FashionMNIST,MNIST}/raw``, and
    accepts the ``train-images.idx3-ubyte`` spelling too.
    """
    name = _IDX_NAMES[(part, kind)]
    alt = name.replace("-idx", ".idx")
    root = Path(root)
    for folder in (root, root / "raw", root / "FashionMNIST" / "raw", root / "MNIST" / "raw"):
        for n in (name, alt):
            for suffix in ("", ".gz"):
                p = folder / (n + suffix)
                if p.is_file():
                    return p
    return None
