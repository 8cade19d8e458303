"""A quick k-NN the trainer can run every few epochs (no cache, no files)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from mimkit.data import (
    build_dataset,
    default_normalization,
    eval_transform,
    leave_out_unreadable,
)
from mimkit.evaluate.features import extract_features
from mimkit.evaluate.knn import knn_evaluate


def online_knn(
    backbone: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset,
    device: torch.device | str,
    k: int = 20,
    batch_size: int = 256,
    *,
    temperature: float = 0.07,
    mode: str = "cls",
    num_workers: int = 0,
    amp: bool = True,
    progress: bool = False,
) -> dict[str, float]:
    """k-NN accuracy of ``backbone`` (e.g. the teacher's) during pretraining.

    Datasets yield ``(eval-transformed image, label)``. The backbone is put in eval mode for
    the pass and restored afterwards. Returns ``{"k": k, "top1": .., "top5": ..}`` (top-5
    only with more than 5 classes), accuracies in percent; ``k`` is the one used, at most the
    number of training images.
    """
    kw = dict(mode=mode, num_workers=num_workers, amp=amp, progress=progress)
    train_f, train_l = extract_features(backbone, train_dataset, device, batch_size, **kw)
    val_f, val_l = extract_features(backbone, val_dataset, device, batch_size, **kw)
    k = min(k, train_f.shape[0])
    dev = torch.device(device)
    res = knn_evaluate(
        train_f.to(dev), train_l, val_f.to(dev), val_l, ks=(k,), temperature=temperature
    )[k]
    return {"k": k, **res}


class Evaluable(Protocol):
    def eval_backbone(self) -> nn.Module: ...


@dataclass
class OnlineKnnHook:
    """The training loop's epoch-end k-NN: the backbone on ``val_data``'s val split (default:
    ``data``'s) against ``data``'s train split, every ``every`` epochs (0: never by itself)."""

    data: str
    val_data: str | None
    subset: float | int | None
    img_size: int
    every: int = 0
    k: int = 20
    name: str = "knn"
    all_ranks: bool = False  # the main process measures; the others wait

    def due(self, epoch: int) -> bool:
        return self.every > 0 and epoch % self.every == 0

    def datasets(self) -> tuple[Dataset, Dataset]:
        """The bank (the train split, eval-transformed) and the queries (the val split); their
        unreadable images leave them (see leave_out_unreadable)."""
        tf = eval_transform(self.img_size, *default_normalization(self.data))
        train = build_dataset(self.data, "train", tf, subset=self.subset)
        val = build_dataset(self.val_data or self.data, "val", tf)
        return leave_out_unreadable(train), leave_out_unreadable(val)

    def __call__(self, method: Evaluable, device: torch.device) -> dict[str, float]:
        """k-NN of ``method.eval_backbone()``."""
        train, val = self.datasets()
        result = online_knn(method.eval_backbone(), train, val, device, k=self.k)
        return {key: float(v) for key, v in result.items()}
