"""Checkpoint files: a failed save keeps the previous one and says why in one line."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from mimkit.errors import OutputError
from mimkit.train.checkpoint import load_checkpoint, remove_stale_temporaries, save_atomic


def full_device() -> str:
    """/dev/full, where every write fails with ENOSPC; skip where it is not that device (a
    symlink to a missing one would make a plain file of it)."""
    if not (os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode)):
        pytest.skip("no /dev/full device here")
    return "/dev/full"


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pth"
    save_atomic({"step": 1, "w": torch.ones(3)}, path)
    # The save's temporary file lands on /dev/full, which answers every write with ENOSPC.
    (tmp_path / f".checkpoint.pth.tmp-{os.getpid()}").symlink_to(full_device())
    with pytest.raises(OutputError, match=r"^cannot save .*pth: disk full; the previous"):
        save_atomic({"step": 2, "w": torch.zeros(100_000)}, path)
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth"]


def test_leftovers_of_killed_saves_are_removed(tmp_path):
    save_atomic({"step": 1}, tmp_path / "checkpoint.pth")
    left = [tmp_path / ".checkpoint.pth.tmp-4242", tmp_path / ".checkpoint_0002.pth.tmp-7"]
    for f in left:
        f.write_bytes(b"half a checkpoint")
    (tmp_path / ".eval.json.tmp-9").write_text("{}")  # not ours to remove
    assert remove_stale_temporaries(tmp_path) == sorted(left)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".eval.json.tmp-9", "checkpoint.pth"]
