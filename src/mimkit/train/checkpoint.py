"""Atomic, safely loadable training checkpoints.

A checkpoint holds tensors and plain Python values only, so it loads with
``torch.load(..., weights_only=True)``. Writes go to a temporary file in the same folder,
then ``os.replace`` it over the old one, so a kill during a save never corrupts the last
good checkpoint.
"""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from mimkit.errors import (
    CheckpointError,
    ConfigError,
    MimkitWarning,
    OutputError,
    output_error,
)
from mimkit.weights.safe_load import read_torch_file

LATEST = "checkpoint.pth"  # the one name of a run's latest checkpoint
PREVIOUS = "checkpoint.previous.pth"  # the one before LATEST, until LATEST is known good
TMP_MARK = ".tmp-"  # .NAME.tmp-PID: a save in progress (or killed mid-way)


def epoch_checkpoint(epoch: int) -> str:
    """Name of the copy kept after (1-based) epoch ``epoch`` (``run.keep_every_epochs``)."""
    return f"checkpoint_{epoch:04d}.pth"


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` through a temporary file; on any failure (a full disk
    included) the previous file at ``path`` is untouched and the error is one line."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A file object, not a path: torch then raises the OSError itself (ENOSPC included)
        # instead of a bare "unexpected pos" from its C++ writer.
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        kept = "; the previous checkpoint is kept" if path.is_file() else ""
        raise OutputError(f"{output_error(path, err, 'cannot save')}{kept}") from None
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the ``.checkpoint*.pth.tmp-PID`` files that killed saves left in ``folder``.

    Call it only while holding the folder's lock: then no other process is saving there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(folder.glob(f".checkpoint*.pth{TMP_MARK}*"))
    for f in stale:
        f.unlink(missing_ok=True)
    return stale


def keep_copy(path: str | Path, name: str) -> Path:
    """Keep a finished checkpoint under another name too (e.g. per-epoch history)."""
    dest = Path(path).with_name(name)
    _keep_as(Path(path), dest)
    return dest


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    state = read_torch_file(path, map_location)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a dictionary")
    return state


def saved_epoch(path: str | Path) -> int | None:
    """The (whole) epochs a training checkpoint holds, read memory-mapped so that its
    tensors are not loaded; None when the file is missing, unreadable, damaged or not a
    mimkit training checkpoint (resuming from it is what says what is wrong)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError):
        return None
    epoch = state.get("epoch") if isinstance(state, dict) else None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def _tensors(tree: Any) -> list[torch.Tensor]:
    """Every tensor in nested dicts / lists (a checkpoint state)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in _tensors(v)]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in _tensors(v)]
    return []


def all_finite(state: Any) -> bool:
    """Whether every floating-point tensor of a checkpoint state is finite."""
    tensors = [t for t in _tensors(state) if t.is_floating_point()]
    return not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def non_finite_tensor(state: Any, prefix: str = "") -> str | None:
    """The name of the first floating-point tensor of ``state`` holding a NaN or an
    infinity (``student.blocks.0.attn.qkv.weight``), or None when all are finite."""
    if isinstance(state, torch.Tensor):
        finite = not state.is_floating_point() or bool(torch.isfinite(state).all())
        return None if finite else prefix or "a tensor"
    items = (
        state.items() if isinstance(state, dict)
        else enumerate(state) if isinstance(state, (list, tuple))
        else ()
    )  # fmt: skip
    for key, value in items:
        bad = non_finite_tensor(value, f"{prefix}.{key}" if prefix else str(key))
        if bad is not None:
            return bad
    return None


def flat_settings(config: dict[str, Any]) -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}`` (sections of plain values)."""
    return {
        f"{section}.{key}": value
        for section, fields in config.items()
        if isinstance(fields, dict)
        for key, value in fields.items()
    }


def changes(
    saved: dict[str, Any],
    current: dict[str, Any],
    defaults: dict[str, Any],
    may_change: tuple[str, ...] = (),
    must_match: tuple[str, ...] = (),
) -> list[tuple[str, Any, Any]]:
    """The settings (``section.field``) whose value in ``current`` differs from ``saved``'s,
    as ``(key, saved, current)``, leaving out those that start with a prefix in
    ``may_change`` unless they start with one in ``must_match``. A setting the checkpoint
    predates (added to mimkit later) counts as its default; one it has and ``current`` does
    not, as ``(key, saved, None)``."""
    old, new, base = flat_settings(saved), flat_settings(current), flat_settings(defaults)
    found = []
    for key in new:
        if key.startswith(may_change) and not key.startswith(must_match):
            continue
        before = old.get(key, base.get(key))
        if before != new[key]:
            found.append((key, before, new[key]))
    found += [(key, old[key], None) for key in sorted(set(old) - set(new))]
    return found


def first_change(
    saved: dict[str, Any],
    current: dict[str, Any],
    defaults: dict[str, Any],
    may_change: tuple[str, ...] = (),
    must_match: tuple[str, ...] = (),
) -> tuple[str, Any, Any] | None:
    """The first of :func:`changes`, or None."""
    found = changes(saved, current, defaults, may_change, must_match)
    return found[0] if found else None


def check_resumed_settings(
    path: Path,
    found: list[tuple[str, Any, Any]],
    allowed: str,
    accept: bool = False,
    never: tuple[str, ...] = ("model.",),
) -> None:
    """Refuse to resume ``path`` when settings changed (``found``, from :func:`changes`),
    naming the first and its two values. ``accept`` (``--allow-changes``) takes them on
    purpose, with one warning listing them, except those starting with ``never`` (the
    model's shape: its weights would not fit)."""
    if not found:
        return
    hard = [c for c in found if c[0].startswith(never)]
    if hard or not accept:
        key, before, now = (hard or found)[0]
        how = "" if hard else " or pass --allow-changes to take the new value on purpose"
        raise CheckpointError(
            f"{path} was run with {key}={before!r}, this run has {key}={now!r}; resume with "
            f"the same value ({allowed}){how}, or choose another --output-dir"
        )
    shown = ", ".join(f"{k} {b!r} -> {n!r}" for k, b, n in found)
    warnings.warn(f"resuming {path} with changed settings: {shown}", MimkitWarning, stacklevel=2)


def check_same_epochs(
    path: Path, state: dict[str, Any], batch_size: int, world_size: int, steps_per_epoch: int
) -> None:
    """A step count means the same epoch only at the same steps per epoch: resuming with
    another batch size (or number of processes, or data) would move epochs and schedules."""
    saved_batch = state.get("batch_size")
    if saved_batch is None:  # checkpoints before the engine kept it apart
        saved_batch = state.get("config", {}).get("optim", {}).get("batch_size")
    saved_world = state.get("world_size", 1)
    saved_spe = state.get("steps_per_epoch", steps_per_epoch)
    if saved_batch is None:
        return  # not a mimkit training checkpoint: loading it says what is wrong
    if (saved_batch, saved_world, saved_spe) == (batch_size, world_size, steps_per_epoch):
        return
    raise CheckpointError(
        f"{path} was trained at {saved_spe} steps per epoch (batch size {saved_batch} x "
        f"{saved_world} process(es)); this run has {steps_per_epoch} (batch size "
        f"{batch_size} x {world_size}): resume with the same batch size, processes and data, "
        "or choose another --output-dir"
    )


class KeptCheckpoints:
    """``checkpoint.pth``, plus the checkpoint before it until the newest is known good.

    A state with finite weights can still be ruined (one huge step): its very next training
    step is then not finite. So a new checkpoint is *unconfirmed* until a training step from
    it has passed the finiteness checks (:meth:`confirm`); until then the one before it stays
    as ``checkpoint.previous.pth``, and :meth:`roll_back` puts it back.
    Only the main process touches the files (``enabled``).
    """

    def __init__(self, folder: str | Path, enabled: bool = True) -> None:
        self.latest = Path(folder) / LATEST
        self.previous = Path(folder) / PREVIOUS
        self.enabled = enabled
        # A previous file left by an earlier process: the latest was never confirmed.
        self.confirmed = not (enabled and self.previous.is_file())

    def save(self, state: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.confirmed and self.latest.is_file():
            _keep_as(self.latest, self.previous)
        save_atomic(state, self.latest)
        self.confirmed = False

    def confirm(self) -> None:
        """A training step from the latest checkpoint was finite: the previous can go."""
        if self.enabled and not self.confirmed:
            self.previous.unlink(missing_ok=True)
        self.confirmed = True

    def roll_back(self) -> int | None:
        """The latest checkpoint led straight to non-finite values: put the previous one
        back. Returns the step of the checkpoint now in place (None: there is none)."""
        if self.enabled and not self.confirmed and self.previous.is_file():
            os.replace(self.previous, self.latest)
            self.confirmed = True
        if not self.latest.is_file():
            return None
        return int(load_checkpoint(self.latest)["step"])


def _keep_as(src: Path, dest: Path) -> None:
    """``dest`` becomes (atomically) the file ``src`` is now: a hard link where the file
    system has them, else a copy. A link is safe: checkpoints are only ever replaced
    (``os.replace``), never changed in place."""
    tmp = dest.with_name(f".{dest.name}{TMP_MARK}{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except OSError as err:
        raise output_error(dest, err, "cannot save") from None
    finally:
        tmp.unlink(missing_ok=True)


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
