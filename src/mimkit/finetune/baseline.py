"""What fine-tuning has to beat: the k-NN accuracy of the backbone it started from, frozen, on
the fine-tuning's own splits (the train split, with its ``--subset``, as the bank; the val
split as the queries), by mimkit's online k-NN (k = 20, as ``mimkit knn``'s headline)."""

from __future__ import annotations

import torch

from mimkit.data import build_dataset, default_normalization, eval_transform
from mimkit.evaluate.online import online_knn
from mimkit.finetune.config import FinetuneConfig
from mimkit.finetune.data import FinetuneData
from mimkit.finetune.model import InitWeights, build_classifier

FROZEN_KNN_K = 20


def frozen_knn(
    cfg: FinetuneConfig,
    init: InitWeights,
    data: FinetuneData,
    device: torch.device,
    k: int = FROZEN_KNN_K,
) -> dict[str, float]:
    """``{"k", "top1", "top5"}`` of the starting weights (the --init file, or the same seed's
    random init), rebuilt: the run's own model has been fine-tuned by now."""
    d = cfg.data
    start, _ = build_classifier(init, data.num_classes, cfg)
    img_size = int(init.description["img_size"])
    bank = build_dataset(
        d.dataset,
        "train",
        eval_transform(img_size, *default_normalization(d.dataset)),
        subset=d.subset,
        on_bad_image=d.on_bad_image,
    )
    scores = online_knn(start.backbone.to(device), bank, data.val, device, k=k)
    return {key: float(v) for key, v in scores.items()}
