"""The fine-tuning summary: last and best epoch (the best is chosen on the val split, so it
is optimistic), written as ``finetune.json`` next to the run's checkpoint, and the frozen
starting backbone's k-NN beside it (whether fine-tuning paid)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mimkit.runs.json_files import write_json

RESULTS_NAME = "finetune.json"


@dataclass(frozen=True)
class FinetuneReport:
    """What a fine-tuning run reports about itself besides its epochs."""

    output_dir: Path
    init: str  # the resolved weights file, or "random"
    checkpoint_key: str | None  # the network read from a two-network checkpoint
    model: dict[str, Any]  # the backbone's description
    data: str
    val_data: str
    subset: float | None
    val_subset: float | None
    num_train: int
    num_val: int
    num_classes: int
    epochs: int
    device: str
    world_size: int
    notes: list[str]
    config: dict[str, Any]


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch with the highest val top-1 (the first of equals)."""
    return max(history, key=lambda r: (r["val_top1"], -r["epoch"]))


def summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    return {"last": dict(history[-1]), "best_optimistic": dict(best_epoch(history))}


def format_scores(record: dict[str, Any], prefix: str = "val_") -> str:
    text = f"top-1 {record[prefix + 'top1']:.2f}"
    if prefix + "top5" in record:
        text += f"  top-5 {record[prefix + 'top5']:.2f}"
    return text


def summary_lines(history: list[dict[str, Any]]) -> list[str]:
    s = summary(history)
    last, best = s["last"], s["best_optimistic"]
    return [
        f"last  (epoch {last['epoch']}):                            {format_scores(last)}",
        f"best  (epoch {best['epoch']}, optimistic: chosen on val): {format_scores(best)}",
    ]


def frozen_knn_lines(history: list[dict[str, Any]], knn: dict[str, float]) -> list[str]:
    """The frozen backbone's k-NN and what fine-tuning gained over it (last epoch)."""
    gain = history[-1]["val_top1"] - knn["top1"]
    return [
        f"frozen backbone, k-NN@{knn['k']:g} on the same splits:   {format_scores(knn, '')}",
        f"fine-tuning gained {gain:+.2f} points of top-1 (last epoch against frozen k-NN)",
    ]


def write_results(
    report: FinetuneReport,
    history: list[dict[str, Any]],
    status: str,
    seconds: float,
    frozen_knn: dict[str, float] | None = None,
) -> Path:
    """``OUTPUT_DIR/finetune.json``: the report, the last and best epochs, the history and,
    when measured, the frozen starting backbone's k-NN on the same splits."""
    fields = asdict(report)
    out = Path(fields.pop("output_dir")) / RESULTS_NAME
    payload = {
        "status": status,
        **{k: fields[k] for k in ("init", "checkpoint_key", "model", "data", "val_data")},
        **{k: fields[k] for k in ("subset", "val_subset", "num_train", "num_val", "num_classes")},
        "epochs_done": len(history),
        "epochs": report.epochs,
        **(summary(history) if history else {}),
        "history": history,
        "seconds": round(seconds, 3),
        **{k: fields[k] for k in ("device", "world_size", "notes", "config")},
        **({"frozen_knn": frozen_knn} if frozen_knn else {}),
    }
    write_json(out, payload)
    return out
