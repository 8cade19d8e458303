"""Training logs: a JSONL file and TensorBoard, written by the main process only."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mimkit.errors import DataError


class RunLogger:
    def __init__(self, output_dir: str | Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / "log.jsonl"
        self._tb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"))

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, **values}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def truncate_after(self, step: int) -> None:
        """On resume, drop records past the checkpoint so the log tells one consistent story
        (and a line a killed run left half-written)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in _records(self.path) if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _records(path: Path) -> list[dict[str, Any]]:
    """The JSON records of a log file. A kill can cut the last line short: it is ignored;
    a broken line anywhere else is a DataError naming it."""
    lines = [(i, line) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    records = []
    for n, (i, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines) - 1:
                break
            raise DataError(f"{path} line {i} is not a JSON record") from None
    return records


def read_log(output_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    path = Path(output_dir) / "log.jsonl"
    if not path.exists():
        return []
    return [r for r in _records(path) if kind is None or r["kind"] == kind]
