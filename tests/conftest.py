"""Suite-wide set-up and fixtures."""

import errno
import fnmatch
import os
import signal
from pathlib import Path

import pytest

# A shell starts background jobs (`pytest &`, nohup) with SIGINT ignored, and Python then
# leaves Ctrl-C ignored in this process and in every child it starts: the tests that send
# real SIGINTs would see nothing. Restore Python's own handler (children then start with the
# default disposition and install theirs).
signal.signal(signal.SIGINT, signal.default_int_handler)


class _FullDiskFile:
    """An open file whose writes fail as on a full disk (the file itself was created)."""

    def __init__(self, file):
        self.file = file

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(pattern)``: from then on, mimkit's whole-or-nothing writes
    (``mimkit.runs.paths.write_atomic``) into files whose final name matches the glob
    ``pattern`` create their temporary file and then fail with ENOSPC."""
    import mimkit.runs.paths

    def fill(pattern: str) -> None:
        def open_on_full_disk(file, mode="r", *args, **kwargs):
            f = open(file, mode, *args, **kwargs)  # noqa: SIM115 - handed back open, as open()
            final = Path(file).name.lstrip(".").rsplit(".tmp-", 1)[0]
            return _FullDiskFile(f) if "w" in mode and fnmatch.fnmatch(final, pattern) else f

        monkeypatch.setattr(mimkit.runs.paths, "open", open_on_full_disk, raising=False)

    return fill
