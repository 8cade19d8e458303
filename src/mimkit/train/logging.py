"""Training logs: a JSONL file and TensorBoard, written by the main process only."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from mimkit.errors import DataError, MimkitWarning, output_error


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
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:  # e.g. a full disk: one line, the checkpoint stays as it was
            raise output_error(self.path, err) from None
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def truncate_after(self, step: int) -> None:
        """On resume, drop records past the checkpoint so the log tells one consistent story.
        Lines that are not records (a line a killed run left half-written, damaged bytes)
        go too, with one warning: the log is a record of the run, not needed to resume it."""
        if not self.enabled or not self.path.exists():
            return
        records, bad = _parse(self.path)
        if bad:
            warnings.warn(
                f"{self.path}: dropped {len(bad)} line(s) that are not log records "
                f"(line {bad[0]} first)",
                MimkitWarning,
                stacklevel=2,
            )
        kept = [r for r in records if r["step"] <= step]
        try:
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        except OSError as err:
            raise output_error(self.path, err) from None

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _record(line: str) -> dict[str, Any] | None:
    """A log record (a JSON object with a string ``kind`` and an integer ``step``), or None."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    ok = (
        isinstance(value, dict)
        and isinstance(value.get("kind"), str)
        and isinstance(value.get("step"), int)
        and not isinstance(value.get("step"), bool)
    )
    return value if ok else None


def _parse(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of a log file and the numbers of the lines that are not records."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    records, bad = [], []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        record = _record(line)
        if record is None:
            bad.append(i)
        else:
            records.append(record)
    return records, bad


def _records(path: Path) -> list[dict[str, Any]]:
    """The records of a log file. A kill can cut the last line short: it is ignored; a
    broken line anywhere else is a DataError naming it."""
    records, bad = _parse(path)
    last = len([line for line in path.read_bytes().splitlines() if line.strip()])
    if bad and bad[0] != last:
        raise DataError(f"{path} line {bad[0]} is not a log record")
    return records


def read_log(output_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    path = Path(output_dir) / "log.jsonl"
    if not path.exists():
        return []
    return [r for r in _records(path) if kind is None or r["kind"] == kind]
