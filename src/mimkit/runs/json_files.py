"""Result files of the evaluation and fine-tuning commands: JSON written atomically, next to
the checkpoint by default (standard library only, so the CLI starts without torch)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mimkit.errors import ConfigError
from mimkit.runs.paths import write_atomic


def check_output_writable(out: Path) -> None:
    parent = out.parent
    if parent.exists() and not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write {out}: {parent} is not writable")


def write_json(out: Path, payload: dict[str, Any]) -> None:
    """``payload`` as ``out``, whole or not at all (OutputError of one line otherwise)."""
    write_atomic(out, (json.dumps(payload, indent=2, default=str) + "\n").encode())
