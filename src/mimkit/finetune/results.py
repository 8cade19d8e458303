"""The fine-tuning summary: last and best epoch (the best is chosen on the val split, so it
is optimistic), written as ``finetune.json`` next to the run's checkpoint, and the frozen
starting backbone's k-NN beside it (whether fine-tuning paid)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimkit.results import write_json

if TYPE_CHECKING:
    from mimkit.finetune.trainer import Finetuner

RESULTS_NAME = "finetune.json"


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


def add_frozen_knn(out: Path, knn: dict[str, float]) -> None:
    """Record the frozen backbone's k-NN in the run's ``finetune.json``."""
    path = out / RESULTS_NAME
    payload = json.loads(path.read_text())
    payload["frozen_knn"] = knn
    write_json(path, payload)


def write_results(trainer: Finetuner, status: str) -> None:
    cfg, data = trainer.cfg, trainer.data
    payload = {
        "status": status,
        "init": trainer.init.source,
        "checkpoint_key": cfg.run.init_key if trainer.init.state is not None else None,
        "model": trainer.model_description,
        "data": cfg.data.dataset,
        "val_data": cfg.data.val_dataset or cfg.data.dataset,
        "subset": cfg.data.subset,
        "val_subset": cfg.data.val_subset,
        "num_train": len(data.train),
        "num_val": len(data.val),
        "num_classes": data.num_classes,
        "epochs_done": len(trainer.history),
        "epochs": cfg.optim.epochs,
        **summary(trainer.history),
        "history": trainer.history,
        "seconds": round(trainer.elapsed, 3),
        "device": str(trainer.device),
        "world_size": trainer.dist.world_size,
        "notes": trainer.notes,
        "config": cfg.to_dict(),
    }
    write_json(trainer.out / RESULTS_NAME, payload)
