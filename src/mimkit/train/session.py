"""A training run's hold on its output folder: one run per folder (the OS lock of
:mod:`mimkit.runs.lock`), taken by rank 0 for every rank, and given back without a trace
when the run is refused before it wrote anything."""

from __future__ import annotations

from pathlib import Path

from mimkit.errors import OutputError
from mimkit.runs.lock import FolderLock
from mimkit.train import checkpoint as ckpt
from mimkit.train.distributed import DistInfo, from_main


def lock_output_dir(out: Path, dist: DistInfo) -> FolderLock:
    """Rank 0 locks the output folder for the whole run (other ranks hold an unlocked
    handle); every rank learns whether that worked, so that all stop together or none."""
    lock = FolderLock(out)
    failure: OutputError | None = None
    if dist.is_main:
        try:
            lock.acquire()
            ckpt.remove_stale_temporaries(out)  # safe: no other run saves here now
        except OutputError as err:
            failure = err
    message = from_main(None if failure is None else str(failure))
    if message is not None:
        raise failure or OutputError(message)
    return lock
