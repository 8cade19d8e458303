"""Shared set-up for the evaluation commands: options, checks, model and data.

Everything a command needs is validated here (checkpoint path and key, model config, data
spec and splits, device) before any image is read or any feature is computed.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mimkit.commands.argtypes import parse_subset, positive_int
from mimkit.devices import resolve_device
from mimkit.errors import ConfigError
from mimkit.evaluate.features import cached_features, file_identity
from mimkit.models import PRESETS, VisionTransformer
from mimkit.weights.io import build_backbone, load_backbone, load_backbone_state, resolve_config

CACHE_VERSION = 1


def add_model_args(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    title: str = "model (needed only for files without a mimkit config)",
    arch_help: str = "preset ViT size",
) -> None:
    g = p.add_argument_group(title) if isinstance(p, argparse.ArgumentParser) else p
    g.add_argument("--checkpoint-key", default="teacher", help="teacher (default) or student")
    g.add_argument("--arch", choices=sorted(PRESETS), help=arch_help)
    g.add_argument("--img-size", type=positive_int, help="model image size")
    g.add_argument("--patch-size", type=positive_int, help="patch size")
    g.add_argument("--num-heads", type=positive_int, help="attention heads (if not a preset)")
    g.add_argument(
        "--interpolate-pos-embed",
        action="store_true",
        help="resize a pos_embed made for another image size (bicubic)",
    )


def add_eval_args(p: argparse.ArgumentParser, batch_size: int, batch_help: str) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint or weights file")
    add_model_args(p)
    g = p.add_argument_group("data")
    g.add_argument("--data", default="embedded", help="data spec (default: embedded)")
    g.add_argument("--train-split", default="train")
    g.add_argument("--val-split", default="val")
    g.add_argument("--subset", help="train subset: N per class, a fraction, or N%%")
    g.add_argument("--val-subset", help="val subset (default: the full split)")
    g.add_argument("--num-workers", type=int, default=None, help="data loader workers")
    r = p.add_argument_group("run")
    r.add_argument("--batch-size", type=positive_int, default=batch_size, help=batch_help)
    r.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1 ...")
    r.add_argument("--amp", action="store_true", help="bf16 autocast for the backbone on CUDA")
    r.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    r.add_argument("--output", help="result JSON (default: next to the checkpoint)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")


@dataclass
class EvalSetup:
    model: VisionTransformer
    config: dict[str, Any]
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

    @property
    def img_size(self) -> int:
        return int(self.config["img_size"])

    def dataset(self, split: str, transform=None) -> Dataset:
        from mimkit.data import build_dataset

        subset = self.subset if split == self.train_split else self.val_subset
        return build_dataset(self.data, split, transform, subset=subset)

    def eval_dataset(self, split: str) -> Dataset:
        from mimkit.data import eval_transform

        return self.dataset(split, eval_transform(self.img_size, self.mean, self.std))

    def key_parts(self, checkpoint_key: str, split: str) -> dict[str, Any]:
        return {
            "v": CACHE_VERSION,
            "checkpoint": file_identity(self.checkpoint),
            "checkpoint_key": checkpoint_key,
            "data": self.fingerprints[split],
            "img_size": self.img_size,
            "patch_size": int(self.config["patch_size"]),
            "mean": list(self.mean),
            "std": list(self.std),
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


def prepare_eval(args: argparse.Namespace) -> EvalSetup:
    """Check everything the k-NN / linear commands need, then build the model and load it."""
    from mimkit.data import dataset_fingerprint, default_normalization, validate_data_spec

    ckpt = Path(args.checkpoint).expanduser()
    device = resolve_device(args.device)
    subset = parse_subset(args.subset)
    val_subset = parse_subset(getattr(args, "val_subset", None))
    sd, file_cfg = load_backbone_state(ckpt, args.checkpoint_key)
    cfg = resolve_config(
        sd,
        file_cfg,
        arch=args.arch,
        img_size=args.img_size,
        patch_size=args.patch_size,
        num_heads=args.num_heads,
    )
    if args.train_split == args.val_split:
        raise ConfigError(f"train and val splits are both {args.train_split!r}")
    for split in (args.train_split, args.val_split):
        validate_data_spec(args.data, split)
    fingerprints = {
        args.train_split: dataset_fingerprint(args.data, args.train_split, subset),
        args.val_split: dataset_fingerprint(args.data, args.val_split, val_subset),
    }
    model = build_backbone(cfg)
    notes = load_backbone(sd, model, interpolate_pos_embed=args.interpolate_pos_embed)
    model.to(device).eval()
    mean, std = default_normalization(str(args.data))
    workers = args.num_workers
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if device.type == "cuda" else 0
    if workers < 0:
        raise ConfigError(f"--num-workers must be >= 0, got {workers}")
    return EvalSetup(
        model=model,
        config=cfg,
        notes=notes,
        device=device,
        checkpoint=ckpt,
        data=str(args.data),
        train_split=args.train_split,
        val_split=args.val_split,
        subset=subset,
        val_subset=val_subset,
        mean=tuple(mean),
        std=tuple(std),
        num_workers=workers,
        cache_dir=None if args.no_cache else ckpt.resolve().parent / "features",
        fingerprints=fingerprints,
    )


def output_path(args: argparse.Namespace, default_name: str) -> Path:
    if args.output:
        out = Path(args.output).expanduser()
        if out.is_dir():
            out = out / default_name
        return out
    return Path(args.checkpoint).expanduser().resolve().parent / default_name


def check_output_writable(out: Path) -> None:
    parent = out.parent
    if parent.exists() and not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write {out}: {parent} is not writable")


def write_json(out: Path, payload: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, out)
