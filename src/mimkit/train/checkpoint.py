"""Atomic, safely loadable training checkpoints.

A checkpoint holds tensors and plain Python values only, so it loads with
``torch.load(..., weights_only=True)``. Writes go to a temporary file in the same folder,
then ``os.replace`` it over the old one, so a kill during a save never corrupts the last
good checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from mimkit.errors import CheckpointError, ConfigError

LATEST = "checkpoint.pth"


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def keep_copy(path: str | Path, name: str) -> Path:
    """Copy a finished checkpoint under another name (e.g. per-epoch history), atomically."""
    path = Path(path)
    dest = path.with_name(name)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.copyfile(path, tmp)
    os.replace(tmp, dest)
    return dest


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which, in one line
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded safely: {err}".splitlines()[0]
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a dictionary")
    return state


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    path = Path(output_dir) / LATEST
    return path if path.is_file() else None


def resume_source(
    output_dir: str | Path, resume: bool = True, resume_from: str | Path | None = None
) -> Path | None:
    """The checkpoint a run continues from: ``resume_from`` if given, else the output
    folder's latest when ``resume``; refuses to start over an existing one without resume."""
    if resume_from is not None:
        if not Path(resume_from).is_file():
            raise CheckpointError(f"checkpoint {resume_from} to resume from does not exist")
        return Path(resume_from)
    existing = latest_checkpoint(output_dir)
    if existing is not None and not resume:
        raise ConfigError(
            f"{existing} exists; resume it (drop --no-resume) or choose another --output-dir"
        )
    return existing
