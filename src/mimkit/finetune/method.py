"""Fine-tuning as a method on the training engine (``mimkit.train``): a backbone and a linear
classifier trained end to end with cross-entropy (Mixup/CutMix and label smoothing), AdamW
with layer-wise LR decay, and top-1/top-5 on the val split after every epoch.

The engine gives it everything else pretraining has: exact resume (drop path and Mixup draw
from streams seeded by (seed, step, rank); timm's Mixup from numpy, seeded here), roll-back
to the previous checkpoint on a non-finite step, the output folder's lock, Ctrl-C to stop,
DDP under torchrun and AMP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mimkit.data import collate_readable
from mimkit.devices import loader_workers
from mimkit.errors import CheckpointError
from mimkit.evaluate.linear import accuracy_counts, accuracy_percent
from mimkit.finetune.config import AugmentConfig, FinetuneConfig
from mimkit.finetune.data import FinetuneData, val_shard
from mimkit.finetune.model import Classifier, InitWeights, weight_average
from mimkit.finetune.optim import layer_decay_groups
from mimkit.finetune.results import FinetuneReport, write_results
from mimkit.models import BackboneSpec
from mimkit.train import checkpoint as ckpt
from mimkit.train.amp import amp_dtype, autocast
from mimkit.train.distributed import DistInfo
from mimkit.train.method import Batch, StepOutput
from mimkit.train.schedules import CosineSchedule

CHECKPOINT_KIND = "finetune"
# Settings a resumed run may change: they do not change what is computed (the seed does).
RESUMABLE = ("run.", "data.num_workers")
NOT_RESUMABLE = ("run.seed", "run.init", "run.init_key")
# Settings added since the first checkpoints, as runs without them ran (others: the default).
BEFORE_THEY_EXISTED = {"batch_augment": False}  # views were made image by image


def build_mixup(a: AugmentConfig, num_classes: int) -> Callable | None:
    """timm's Mixup/CutMix (soft targets with label smoothing), or None when both are off."""
    if not a.mixing:
        return None
    from timm.data import Mixup  # optional dependency: FinetuneConfig.check says so

    return Mixup(
        mixup_alpha=a.mixup,
        cutmix_alpha=a.cutmix,
        prob=a.mix_prob,
        switch_prob=a.switch_prob,
        mode="batch",
        label_smoothing=a.label_smoothing,
        num_classes=num_classes,
    )


def finetune_schedule(cfg: FinetuneConfig, steps_per_epoch: int, world_size: int) -> CosineSchedule:
    """Warm-up + cosine of the learning rate (scaled by the total batch / 256); a constant
    weight decay (on weight matrices only: the groups say where)."""
    o = cfg.optim
    return CosineSchedule(
        steps_per_epoch=steps_per_epoch,
        epochs=o.epochs,
        lr=o.lr * o.batch_size * world_size / 256,
        min_lr=o.min_lr,
        warmup_epochs=o.warmup_epochs,
        weight_decay=o.weight_decay,
        weight_decay_end=o.weight_decay,
    )


class ClassifierMethod(nn.Module):
    """The classifier, its Mixup and its per-epoch history (what ``finetune.json`` reports)."""

    name = "finetune"
    progress_keys = ("val_top1", "val_top5")

    def __init__(
        self,
        cfg: FinetuneConfig,
        model: Classifier,
        init: InitWeights,
        data: FinetuneData,
        schedule: CosineSchedule,
        report: FinetuneReport,
        dist: DistInfo,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.cfg, self.init, self.data, self.schedule = cfg, init, data, schedule
        self.report, self.dist, self.device = report, dist, device
        self.model = model.to(device)
        self.train_model: nn.Module = self.model  # DDP wraps it (distribute)
        self.mixup = build_mixup(cfg.augment, data.num_classes)
        # When on, the average of the weights is what the evaluations measure.
        self.ema = weight_average(self.model, cfg.optim.ema)
        self.history: list[dict[str, Any]] = []

    # -- what the engine uses -------------------------------------------------------------
    def trainable(self) -> nn.Module:
        return self.model

    def param_groups(self) -> list[dict[str, Any]]:
        return layer_decay_groups(self.model, self.cfg.optim.layer_decay)

    def eval_backbone(self) -> nn.Module:
        return self.model.backbone

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        self.train_model = wrap(self.train_model)

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "kind": CHECKPOINT_KIND,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "history": self.history,
            "init": self.init.source,
            "num_classes": self.data.num_classes,
        }

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.history = list(state.get("history", []))

    def identity(self) -> dict[str, Any]:
        return {"model": self.init.description, "finetune": self.cfg.to_dict()}

    def check_resumable(self, state: dict[str, Any], path: Path) -> None:
        """The same kind of checkpoint, backbone, weights file and settings (only settings
        that do not change what is computed may differ), so the resumed run replays."""
        other = "choose another --output-dir"
        if state.get("kind") != CHECKPOINT_KIND:
            raise CheckpointError(f"{path} is not a fine-tuning checkpoint; {other}")
        saved = state.get("config", {})
        mine = self.init.description
        if not _same_model(saved.get("model"), mine):
            change = _model_change(saved.get("model"), mine)
            raise CheckpointError(f"{path} fine-tuned another backbone ({change}); {other}")
        if state.get("init") != self.init.source:
            raise CheckpointError(
                f"{path} fine-tuned {state.get('init')}, not {self.init.source}; {other}"
            )
        defaults = FinetuneConfig().to_dict()
        defaults["data"].update(BEFORE_THEY_EXISTED)
        found = ckpt.changes(
            saved.get("finetune", {}), self.cfg.to_dict(), defaults, RESUMABLE, NOT_RESUMABLE
        )
        allowed = "only run.* settings and data.num_workers may change"
        ckpt.check_resumed_settings(path, found, allowed, self.cfg.run.allow_changes)

    def batch_extras(self) -> None:
        return None  # nothing to draw in the loader workers

    # -- one step -------------------------------------------------------------------------
    def train_step(self, batch: Batch, step: int, seed: int) -> StepOutput:
        np.random.seed(seed % 2**32)  # timm's Mixup draws from numpy
        images = batch.crops.to(self.device, non_blocking=True)
        targets = batch.labels.to(self.device, non_blocking=True)
        smoothing = self.cfg.augment.label_smoothing
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)  # soft targets, smoothing included
            smoothing = 0.0
        logits = self.train_model(images)
        loss = nn.functional.cross_entropy(logits.float(), targets, label_smoothing=smoothing)
        return StepOutput(loss)

    def before_optimizer_step(self, step: int) -> None:
        """(Nothing is frozen by the schedule.)"""

    def after_optimizer_step(self, step: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    # -- evaluation and results -----------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Top-1/top-5 and loss on the whole val split, each process taking its share: of the
        weights' average when there is one."""
        model = self.ema.module if self.ema is not None else self.model
        model.eval()
        shard = val_shard(self.data.val, self.dist.rank, self.dist.world_size)
        loader = DataLoader(
            shard,
            batch_size=2 * self.cfg.optim.batch_size,
            num_workers=loader_workers(self.cfg.data.num_workers),  # capped at the cores
            pin_memory=self.device.type == "cuda",
            collate_fn=collate_readable,  # unreadable images leave the val split
        )
        batches = ((x.to(self.device), y.to(self.device)) for x, y in filter(None, loader))
        with autocast(self.device, amp_dtype(self.cfg.run.amp, self.device)):
            counts = accuracy_counts(model, batches).to(self.device)
        if self.dist.enabled:
            torch.distributed.all_reduce(counts)
        model.train()
        return accuracy_percent(counts, self.data.num_classes)

    def end_epoch(self, epoch: int, step: int, record: dict[str, float]) -> None:
        self.history.append(
            {
                "epoch": epoch,
                "step": step,
                "train_loss": record["loss"],
                "lr": self.schedule.learning_rate(step - 1),
                # training only (evaluation and the epoch's save excluded), as pretraining's
                "images_per_s": record["images_per_s"],
                **{k: v for k, v in record.items() if k.startswith("val_")},
                "elapsed": record["elapsed"],
            }
        )
        if self.dist.is_main:
            write_results(self.report, self.history, "running", record["elapsed"])


@dataclass
class ValAccuracyHook:
    """The engine's epoch-end evaluation of fine-tuning: every epoch, in every process."""

    name: str = "val"
    all_ranks: bool = True  # the val split is shared out and the counts all-reduced

    def due(self, epoch: int) -> bool:
        return True

    def __call__(self, method: ClassifierMethod, device: torch.device) -> dict[str, float]:
        return method.evaluate()


def _same_model(saved: Any, description: dict[str, Any]) -> bool:
    """Compared as typed descriptions, so that checkpoints written before the description
    knew other backbone families still resume."""
    try:
        return BackboneSpec.from_dict(saved) == BackboneSpec.from_dict(description)
    except (TypeError, AttributeError):  # no description, or not one of ours
        return False


def _model_change(saved: Any, description: dict[str, Any]) -> str:
    """The first field of the backbone description that differs, as ``field: saved -> now``."""
    try:
        saved = BackboneSpec.from_dict(saved).to_dict()
        description = BackboneSpec.from_dict(description).to_dict()
    except (TypeError, AttributeError):
        return "no backbone description of mimkit's"
    for key in sorted(set(saved) | set(description)):
        if saved.get(key) != description.get(key):
            return f"{key} {saved.get(key)!r}, this run {description.get(key)!r}"
    return "another description"
