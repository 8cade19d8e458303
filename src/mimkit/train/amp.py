"""Mixed precision for training and fine-tuning: ``run.amp`` as an autocast dtype, and the
autocast context for it."""

from __future__ import annotations

import contextlib

import torch


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """``run.amp`` as an autocast dtype: auto is bf16 on CUDA, none elsewhere."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (from :func:`amp_dtype`); None: full precision."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
