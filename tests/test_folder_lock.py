"""One process per output folder: the OS lock, its holder's PID, and no stale locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mimkit.errors import OutputError
from mimkit.runs.lock import LOCK_NAME, FolderInUseError, FolderLock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from mimkit.runs.lock import FolderLock
    lock = FolderLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
    """
)


def hold_in_child(folder: Path) -> subprocess.Popen:
    """Another process that takes the folder's lock and keeps it until killed."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    folder = tmp_path / "run"
    child = hold_in_child(folder)
    try:
        with pytest.raises(FolderInUseError, match=rf"{folder} is in use .*PID {child.pid}\)"):
            FolderLock(folder).acquire()
    finally:
        child.kill()
        child.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "run"
    child = hold_in_child(folder)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert (folder / LOCK_NAME).exists()  # the file stays; the OS lock went with the process
    with FolderLock(folder) as lock:
        assert lock.held
        assert (folder / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert not lock.held


def test_lock_is_free_again_after_release(tmp_path):
    with FolderLock(tmp_path / "run"), pytest.raises(FolderInUseError):
        FolderLock(tmp_path / "run").acquire()
    FolderLock(tmp_path / "run").acquire().release()


def test_a_file_in_place_of_the_folder_is_one_line(tmp_path):
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        FolderLock(tmp_path / "run").acquire()
    with pytest.raises(OutputError, match=r"sub cannot be made: .*run is a file, not a folder"):
        FolderLock(tmp_path / "run" / "sub").acquire()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_parent_is_one_line(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            FolderLock(tmp_path / "run").acquire()
    finally:
        tmp_path.chmod(0o700)
