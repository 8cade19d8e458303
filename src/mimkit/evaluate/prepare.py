"""Shared set-up for the evaluation commands: checks, model and data, from plain values.

Everything a command needs is validated here (checkpoint path and key, model description,
data spec and splits, device) before any image is read or any feature is computed. The
command-line arguments that feed it live in ``commands/evalargs.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mimkit.data import (
    build_dataset,
    dataset_fingerprint,
    default_normalization,
    eval_transform,
    leave_out_unreadable,
    require_classes,
    validate_data_spec,
)
from mimkit.devices import loader_workers, resolve_device, usable_cores
from mimkit.errors import ConfigError
from mimkit.evaluate.features import cached_features, feature_cache_key
from mimkit.models import Backbone, BackboneSpec, build_backbone
from mimkit.weights.io import ModelSource, load_backbone, load_backbone_state, resolve_spec


@dataclass
class EvalSetup:
    model: Backbone
    spec: BackboneSpec
    notes: list[str]
    device: torch.device
    checkpoint: Path
    data: str
    train_split: str
    val_split: str
    subset: float | int | None
    val_subset: float | int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_workers: int
    cache_dir: Path | None
    fingerprints: dict[str, str] = field(default_factory=dict)
    val_data: str | None = None  # the val split's data spec, when not ``data``'s
    _eval_sets: dict[str, Dataset] = field(default_factory=dict, repr=False)

    @property
    def img_size(self) -> int:
        return self.spec.img_size

    def data_of(self, split: str) -> str:
        return (self.val_data or self.data) if split == self.val_split else self.data

    def dataset(self, split: str, transform=None) -> Dataset:
        subset = self.subset if split == self.train_split else self.val_subset
        return build_dataset(self.data_of(split), split, transform, subset=subset)

    def eval_dataset(self, split: str) -> Dataset:
        """The split with the evaluation transform (built once); unreadable images leave it
        (see leave_out_unreadable)."""
        if split not in self._eval_sets:
            tf = eval_transform(self.img_size, self.mean, self.std)
            self._eval_sets[split] = leave_out_unreadable(self.dataset(split, tf))
        return self._eval_sets[split]

    def key_parts(self, checkpoint_key: str, split: str) -> dict[str, Any]:
        data = self.fingerprints[split]
        return feature_cache_key(
            self.checkpoint, checkpoint_key, data, self.spec, self.mean, self.std
        )

    def report(self, checkpoint_key: str) -> dict[str, Any]:
        """The part of a result JSON every evaluation shares."""
        return {
            "checkpoint": str(self.checkpoint.resolve()),
            "checkpoint_key": checkpoint_key,
            "model": self.spec.to_dict(),
            "data": self.data,
            "train_split": self.train_split,
            "val_split": self.val_split,
            "subset": self.subset,
            "val_subset": self.val_subset,
            "notes": self.notes,
        }

    def features(
        self, split: str, mode: str, checkpoint_key: str, batch_size: int, amp: bool, progress: bool
    ):
        return cached_features(
            self.model,
            self.eval_dataset(split),
            self.device,
            cache_dir=self.cache_dir,
            key_parts=self.key_parts(checkpoint_key, split),
            batch_size=batch_size,
            mode=mode,
            num_workers=self.num_workers,
            amp=amp,
            progress=progress,
            desc=f"{split} features",
        )


def prepare_eval(
    source: ModelSource,
    data: str,
    train_split: str = "train",
    val_split: str = "val",
    subset: float | int | None = None,
    val_subset: float | int | None = None,
    device: str = "auto",
    num_workers: int | None = None,
    cache: bool = True,
    val_data: str | None = None,
) -> EvalSetup:
    """Check everything the k-NN / linear commands need, then build the model and load it.
    ``val_data``: the data spec of the val split when it is not ``data``'s."""
    ckpt = Path(source.checkpoint).expanduser()
    dev = resolve_device(device)
    sd, file_cfg = load_backbone_state(ckpt, source.checkpoint_key)
    spec = resolve_spec(
        sd,
        file_cfg,
        arch=source.arch,
        img_size=source.img_size,
        patch_size=source.patch_size,
        num_heads=source.num_heads,
    )
    if train_split == val_split:
        raise ConfigError(f"train and val splits are both {train_split!r}")
    val_spec = val_data or data
    validate_data_spec(data, train_split)
    validate_data_spec(val_spec, val_split)
    bank = build_dataset(data, train_split, subset=subset)  # labels only: no image is read
    require_classes(bank, f"the {train_split} split of {data}")
    fingerprints = {
        train_split: dataset_fingerprint(data, train_split, subset),
        val_split: dataset_fingerprint(val_spec, val_split, val_subset),
    }
    model = build_backbone(spec)
    notes = load_backbone(sd, model, interpolate_pos_embed=source.interpolate_pos_embed)
    model.to(dev).eval()
    mean, std = default_normalization(str(data))
    workers = num_workers
    if workers is None:
        workers = min(4, usable_cores()) if dev.type == "cuda" else 0
    if workers < 0:
        raise ConfigError(f"--num-workers must be >= 0, got {workers}")
    workers = loader_workers(workers, "--num-workers")
    return EvalSetup(
        model=model,
        spec=spec,
        notes=notes,
        device=dev,
        checkpoint=ckpt,
        data=str(data),
        train_split=train_split,
        val_split=val_split,
        subset=subset,
        val_subset=val_subset,
        mean=tuple(mean),
        std=tuple(std),
        num_workers=workers,
        cache_dir=ckpt.resolve().parent / "features" if cache else None,
        fingerprints=fingerprints,
        val_data=str(val_data) if val_data else None,
    )
