"""Device choice, shared by training and evaluation: everything takes a device; and how
many data loader workers the machine's cores can run."""

from __future__ import annotations

import os
import warnings

import torch

from mimkit.errors import ConfigError, MimkitWarning


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, as PyTorch's loader counts)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def loader_workers(requested: int, name: str = "data.num_workers") -> int:
    """``requested`` data loader workers, at most one per usable core: more only queue for
    the same cores (and PyTorch warns of a freeze). One warning line says when it caps."""
    cores = usable_cores()
    if requested <= cores:
        return requested
    warnings.warn(
        f"{name} {requested} is more than the {cores} CPU core(s) here: using {cores} loader "
        "worker(s)",
        MimkitWarning,
        stacklevel=2,
    )
    return cores


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` = CUDA when available, else CPU; anything else is checked. Under torchrun,
    a bare ``cuda`` means this process's GPU (``local_rank``), which becomes current."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for but CUDA is not available")
        if dev.index is None and local_rank is not None:
            dev = torch.device("cuda", local_rank)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
        if local_rank is not None:
            torch.cuda.set_device(dev)
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} asked for but MPS is not available")
    return dev
