"""Reading ``.pth`` files with ``torch.load(weights_only=True)`` only, and saying in one line
why a file was refused: Python objects mimkit will not unpickle, or a damaged file."""

from __future__ import annotations

import errno
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from mimkit.errors import CheckpointError


def read_torch_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """The file's content, loaded so that nothing in it can run code."""
    try:
        with warnings.catch_warnings():  # e.g. torch's note on the pickle protocol
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.EACCES, errno.EISDIR, errno.EPERM):
            raise CheckpointError(f"{path} cannot be read: {err.strerror}") from None
        raise CheckpointError(damaged_message(path)) from None  # e.g. EINVAL: a seek past the end
    except Exception as err:  # noqa: BLE001 - text or damaged bytes fail anywhere in the unpickler
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found:
            raise CheckpointError(python_objects_message(path, found.group(1))) from None
        raise CheckpointError(damaged_message(path)) from None


def damaged_message(path: str | Path) -> str:
    return (
        f"{path} is not a readable PyTorch file (truncated, damaged, or not saved by "
        "torch.save)"
    )


def python_objects_message(path: str | Path, name: str) -> str:
    what = f" (such as {name})"
    keep = (
        f"python -c \"import torch; c = torch.load('{path}', weights_only=False); "
        "torch.save({k: v for k, v in c.items() if isinstance(v, (dict, torch.Tensor))}, "
        f"'{path}.tensors.pth')\""
    )
    return (
        f"{path} holds Python objects{what} that mimkit will not unpickle (it loads tensors "
        f"only, so that no file can run code); if you trust the file, keep its tensors with "
        f"{keep} and use that file, or `mimkit export` it to .safetensors"
    )
