"""``<run>/eval.json``: what a grid knows about one run, typed.

A run's record says which training config it belongs to (``config_hash``), how far it got
(``status``) and, per evaluated epoch, each evaluation's result next to the settings it was
computed with, so that a changed or added evaluation is computed again alone. Records of the
first layout (k-NN and linear results at the epoch's top level, one ``eval_key`` for the
run) are read as well: their results are kept.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimkit.runs.json_files import write_json

EVAL_FILE = "eval.json"
LAYOUT = 2

PARTIAL, COMPLETE, FAILED = "partial", "complete", "failed"


@dataclass
class EpochRecord:
    """What is known at one evaluated epoch."""

    checkpoint: str = ""  # the file evaluated
    results: dict[str, dict[str, float]] = field(default_factory=dict)  # evaluation -> values
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # evaluation -> settings
    training: dict[str, float] = field(default_factory=dict)  # loss, images_per_s ... (log)
    seconds: float = 0.0  # spent evaluating

    def has(self, name: str, settings: dict[str, Any]) -> bool:
        """Whether evaluation ``name`` was computed here with ``settings``."""
        return name in self.results and _plain(self.settings.get(name)) == _plain(settings)

    def put(self, name: str, settings: dict[str, Any], values: dict[str, float]) -> None:
        self.results[name] = dict(values)
        self.settings[name] = _plain(settings)


@dataclass
class RunRecord:
    run: str
    strategy: str
    slug: str = ""
    mask: list[str] = field(default_factory=list)
    seed: int = 0
    epochs: int = 0
    config_hash: str = ""  # the training config's identity (see compare.spec.identity_hash)
    status: str = PARTIAL  # partial, complete or failed
    error: str | None = None  # why it failed
    pretrain_seconds: float = 0.0
    eval_seconds: float | None = None
    images_per_s: float | None = None  # mean over the run's epochs
    missing_epochs: list[int] = field(default_factory=list)  # no checkpoint kept for them
    epochs_eval: dict[int, EpochRecord] = field(default_factory=dict)
    layout: int = LAYOUT

    def epoch(self, epoch: int) -> EpochRecord:
        return self.epochs_eval.setdefault(epoch, EpochRecord())

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["epochs_eval"] = {str(e): dataclasses.asdict(r) for e, r in self.epochs_eval.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        names = {f.name for f in dataclasses.fields(cls)} - {"epochs_eval", "layout"}
        rec = cls(**{k: v for k, v in data.items() if k in names})
        first_layout = data.get("layout", 1) == 1
        for epoch, raw in (data.get("epochs_eval") or {}).items():
            if isinstance(raw, dict):
                er = _first_layout_epoch(raw, data.get("eval_key")) if first_layout else None
                rec.epochs_eval[int(epoch)] = er or _epoch_from_dict(raw)
        return rec

    def write(self, run_dir: str | Path) -> None:
        write_json(Path(run_dir) / EVAL_FILE, self.to_dict())


def read_record(run_dir: str | Path) -> RunRecord | None:
    """The run's record; None when there is none or it cannot be read (then the run is
    evaluated again)."""
    path = Path(run_dir) / EVAL_FILE
    try:
        data = json.loads(path.read_text())
        return RunRecord.from_dict(data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def _epoch_from_dict(raw: dict[str, Any]) -> EpochRecord:
    names = {f.name for f in dataclasses.fields(EpochRecord)}
    return EpochRecord(**{k: v for k, v in raw.items() if k in names})


def _first_layout_epoch(raw: dict[str, Any], key: Any) -> EpochRecord | None:
    """An epoch of a first-layout record: ``{"knn": {"10": {"top1", "top5"}}, "linear": {..},
    "loss", "images_per_s", "nmi", "seconds"}``, its settings in the run's ``eval_key``."""
    if not isinstance(key, dict):
        return None
    er = EpochRecord(checkpoint=str(raw.get("checkpoint", "")), seconds=raw.get("seconds", 0.0))
    er.training = {k: raw[k] for k in ("loss", "images_per_s", "nmi") if k in raw}
    knn = raw.get("knn") or {}
    values = {f"{which}_k{k}": v for k, r in knn.items() for which, v in r.items()}
    er.put(
        f"knn:{key.get('features', 'cls')}",
        {"ks": sorted(key.get("knn_ks", [])), "temperature": key.get("temperature")},
        values,
    )
    lin = raw.get("linear")
    if lin:
        er.put(
            "linear",
            {
                "epochs": key.get("linear_epochs"),
                "batch_size": key.get("linear_batch_size"),
                "lr": key.get("linear_lr"),
                "features": key.get("linear_features"),
            },
            {k: v for k, v in lin.items() if k in ("top1", "top5", "best_top1", "lr")},
        )
    return er


def _plain(value: Any) -> Any:
    """As it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))
