"""One run per output folder: an exclusive OS lock on ``FOLDER/.mimkit.lock``.

The operating system drops the lock when the holding process ends, however it ends (kill -9
included), so a crashed run never leaves a stale lock behind. The lock file itself stays (it
holds the last holder's PID); deleting it on exit would let a second run lock a fresh file
while a third still holds the old one.

POSIX uses ``fcntl.flock``, Windows ``msvcrt.locking``. Where neither works (no such module,
or a file system without locks), the run goes on unlocked after one warning.
"""

from __future__ import annotations

import contextlib
import errno
import os
import warnings
from pathlib import Path
from types import TracebackType

from mimkit.errors import MimkitWarning, OutputError, output_error
from mimkit.runs.paths import writable_folder

LOCK_NAME = ".mimkit.lock"
_BUSY = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES}

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None  # type: ignore[assignment]


class FolderInUseError(OutputError):
    """Another process holds the folder's lock."""


def _lock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: no locking on this system."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        elif msvcrt is not None:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # byte 0; the PID is written after it
        else:
            return None
    except OSError as err:
        if err.errno in _BUSY:
            return False
        return None  # e.g. ENOLCK on a network file system without locks
    return True


class FolderLock:
    """``with FolderLock(folder):`` creates ``folder`` if needed and holds its lock; raises
    :class:`FolderInUseError` naming the holder's PID when another process has it, or
    :class:`OutputError` when the folder cannot be created or written."""

    def __init__(
        self, folder: str | os.PathLike, purpose: str = "run", name: str = LOCK_NAME
    ) -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.purpose = purpose
        self._fd: int | None = None
        self._made: list[Path] = []  # what acquire() created, which release may remove
        self.holder: int | None = None  # the PID of the process that held it when refused

    def acquire(self) -> FolderLock:
        made = [p for p in (self.path, self.folder) if not p.exists()]
        writable_folder(self.folder)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise output_error(self.folder, err, "cannot write to output folder") from None
        locked = _lock(fd)
        if locked is False:
            self.holder = holder = _read_pid(fd)
            os.close(fd)
            who = f"PID {holder}" if holder else "another process"
            raise FolderInUseError(
                f"output folder {self.folder} is in use by another mimkit {self.purpose} "
                f"({who}); wait for it to end or choose another folder"
            )
        if locked is None:
            warnings.warn(
                f"cannot lock {self.path} on this system: make sure no other run writes to "
                f"{self.folder}",
                MimkitWarning,
                stacklevel=2,
            )
        try:
            text = f" {os.getpid()}\n".encode()
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, text)
            os.ftruncate(fd, len(text))
        except OSError as err:
            os.close(fd)
            raise output_error(self.path, err) from None
        self._fd, self._made = fd, made
        return self

    def release(self, unused: bool = False) -> None:
        """Drop the lock. ``unused``: the run ended before writing anything (refused during
        set-up), so the lock file and folder that acquire() created go too (a folder only
        when nothing else is in it)."""
        if self._fd is None:
            return
        if unused:
            with contextlib.suppress(OSError):  # e.g. something else in the folder: it stays
                if self.path in self._made:
                    self.path.unlink()
                if self.folder in self._made:
                    self.folder.rmdir()
        os.close(self._fd)  # closing the file drops the lock
        self._fd = None

    def __del__(self) -> None:  # a run object dropped without close() frees its folder
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 1, os.SEEK_SET)  # byte 0 may be locked (Windows)
        text = os.read(fd, 32).decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
