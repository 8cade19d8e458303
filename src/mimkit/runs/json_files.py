"""Result files of the evaluation and fine-tuning commands: JSON written atomically, next to
the checkpoint by default (standard library only, so the CLI starts without torch)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mimkit.errors import ConfigError


def check_output_writable(out: Path) -> None:
    parent = out.parent
    if parent.exists() and not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write {out}: {parent} is not writable")


def write_json(out: Path, payload: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, out)
