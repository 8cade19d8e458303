"""Output folders and files: created up front, so that a path that cannot be written is a
one-line error before any work; written whole or not at all; with the usual permissions."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from mimkit.errors import OutputError, output_error


def writable_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` (and its parents) if needed and check that files can be made in it;
    OutputError naming the path and the cause otherwise."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if existing.exists() and not existing.is_dir():
        where = "" if existing == folder else f" cannot be made: {existing}"
        raise OutputError(f"{what} {folder}{where} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise output_error(folder, err, f"cannot write to {what}") from None
    return folder


def default_file_mode() -> int:
    """What ``open(path, "w")`` would give a new file (0o644 under the usual umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def replace_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Make ``path`` with ``write(temporary path)`` beside it (``.NAME.tmp-PID``), then a
    rename, so that ``path`` holds either its old content or all of the new one. On an
    OSError (a full disk) the temporary file is removed and OutputError names the path and
    the cause."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise output_error(path, err) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """``data`` as ``path``, whole or not at all (see :func:`replace_atomic`)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    replace_atomic(path, write)
