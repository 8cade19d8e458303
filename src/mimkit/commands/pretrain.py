"""``mimkit pretrain``: iBOT pretraining with attention-guided (or random/block) masks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimkit.commands.config_args import Flags, add_config_arguments, config_overrides

if TYPE_CHECKING:
    from mimkit.train.loop import TrainLoop

# flag -> config path; each is also settable as --set section.field=value
FLAGS: Flags = {
    "--data": ("data.dataset", str, "data set: embedded, a folder, cifar10:DIR, ..."),
    "--subset": ("data.subset", float, "per-class subset: fraction < 1 or count >= 1"),
    "--output-dir": ("run.output_dir", str, "where checkpoints and logs go"),
    "--epochs": ("optim.epochs", int, "number of epochs"),
    "--batch-size": ("optim.batch_size", int, "images per process and step"),
    "--lr": ("optim.lr", float, "peak learning rate at a total batch of 256"),
    "--arch": ("model.arch", str, "backbone: vit_nano ... vit_large, swin_*, timm:NAME"),
    "--img-size": ("model.img_size", int, "global crop size in pixels"),
    "--patch-size": ("model.patch_size", int, "patch size in pixels"),
    "--local-crops": ("data.local_crops", int, "number of local crops"),
    "--max-steps": ("run.max_steps", int, "stop after this many steps (smoke tests)"),
    "--device": ("run.device", str, "auto, cpu, cuda or cuda:N"),
    "--seed": ("run.seed", int, "random seed"),
    "--workers": ("data.num_workers", int, "data loader workers per process"),
    "--amp": ("run.amp", str, "auto, bf16, fp16 or none"),
    "--compile": ("run.compile", str, "torch.compile backend for the blocks (inductor), or none"),
    "--lambda3": ("loss.lambda3", float, "weight of the dense contrastive term (0: off)"),
    "--contrastive-k": ("loss.contrastive_k", int, "high/low patches per crop for it"),
    "--contrastive-tau": ("loss.contrastive_tau", float, "its temperature"),
    "--knn-every": ("run.knn_every_epochs", int, "online k-NN every N epochs (0: off)"),
    "--init": ("run.init", str, "start from these backbone weights (any format mimkit knn reads)"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a ViT with iBOT and the chosen masking strategies",
        description="Pretrain a ViT with iBOT. Resumes automatically from OUTPUT_DIR.",
    )
    add_config_arguments(p, FLAGS, "fashion_mnist_vit_mini")
    p.add_argument(
        "--mask",
        nargs="+",
        metavar="STRATEGY",
        help="one strategy per global crop (or one for all), e.g. high@raw:11 high@raw:4",
    )
    p.add_argument("--no-knn", action="store_true", help="skip the k-NN evaluation at the end")
    p.set_defaults(run=run)


def collect_overrides(args: argparse.Namespace) -> list[tuple[str, Any]]:
    overrides = config_overrides(args, FLAGS)
    if args.mask:
        overrides.append(("masking.strategies", list(args.mask)))
    if args.no_knn:
        overrides.append(("run.final_knn", False))
    return overrides


def run(args: argparse.Namespace) -> int:
    # Imported here: torch and the models load only when a command runs, not for --help.
    from mimkit.ibot.config import load_config
    from mimkit.ibot.pretrain import run_pretraining

    cfg = load_config(args.config, collect_overrides(args))
    note = knn_without_val_split(cfg)

    from mimkit.data import describe_data_spec

    def announce(loop: TrainLoop) -> None:
        if loop.dist.is_main:
            if note:
                print(f"mimkit pretrain: note: {note}", flush=True)
            m, d = cfg.model, cfg.data
            print(
                f"mimkit pretrain: {m.arch} {m.img_size}px/{m.patch_size}, "
                f"local crops {d.local_crops}x{d.local_crop_size}px, "
                f"masks {' '.join(cfg.masking.strategies)}, data {describe_data_spec(d.dataset)} "
                f"({len(loop.data.dataset)} images), {loop.steps_per_epoch} steps/epoch, "
                f"augmented {loop.data.augmentation}, "
                f"device {loop.device}, output {loop.out}"
                + (f", resuming at step {loop.start_step}" if loop.start_step else ""),
                flush=True,
            )

    result = run_pretraining(
        cfg, resume=not args.no_resume, resume_from=args.resume, on_start=announce
    )
    if result.status == "non_finite":
        if result.is_main:
            print(f"mimkit pretrain: error: {result.error}", file=sys.stderr)
        return 3
    if result.status in ("stopped", "interrupted", "knn_interrupted"):
        if result.is_main:
            print(f"mimkit pretrain: {interruption_line(result)}")
        return 130
    if result.is_main:
        print(f"mimkit pretrain: {result.status} at step {result.step}")
        if result.knn:
            print_final_knn(cfg, result.knn)
    return 0


def knn_without_val_split(cfg: Any) -> str | None:
    """Turn the online and final k-NN off when the training data has no val split (a plain
    folder of class folders, IDX files without t10k-*) and none is named: the run would
    otherwise stop at its first k-NN. Returns the note that says so (None: nothing changed).
    A named ``data.val_dataset`` that cannot be used is a DataError, before any work."""
    from mimkit.data import validate_data_spec
    from mimkit.errors import MimkitError

    d, r = cfg.data, cfg.run
    if d.val_dataset:
        validate_data_spec(d.val_dataset, "val")
        return None
    if not (r.final_knn or r.knn_every_epochs):
        return None
    try:
        validate_data_spec(d.dataset, "train")
    except MimkitError:
        return None  # the data itself is refused later, with its own message
    try:
        validate_data_spec(d.dataset, "val")
    except MimkitError:
        r.final_knn, r.knn_every_epochs = False, 0
        return (
            f"{d.dataset} has no val split: no k-NN during or after training "
            "(--set data.val_dataset=DATA names one)"
        )
    return None


def interruption_line(result: Any) -> str:
    """What a stopped or interrupted run left, in one line."""
    if result.status == "knn_interrupted":
        return (
            f"finished at step {result.step} and saved; the final k-NN was interrupted "
            f"(mimkit knn --checkpoint {result.checkpoint} runs it)"
        )
    if result.step is None:
        return "interrupted before the first checkpoint; nothing was saved"
    if result.status == "stopped":
        return f"stopped at step {result.step}; rerun to resume."
    return f"interrupted; the checkpoint of step {result.step} is whole: rerun to resume."


def print_final_knn(cfg: Any, scores: dict[str, float]) -> None:
    """The final k-NN line, with raw pixels and random weights on the same split beside it."""
    import torch

    from mimkit.devices import resolve_device
    from mimkit.evaluate.reference import reference_knn
    from mimkit.ibot.pretrain import knn_hook
    from mimkit.models import build_vit

    def random_backbone() -> Any:
        torch.manual_seed(cfg.run.seed)  # the run's own initial weights
        return build_vit(cfg.model.arch, cfg.model.img_size, cfg.model.patch_size)

    train, val = knn_hook(cfg).datasets()
    k = int(scores["k"])
    print(
        f"k-NN top-1 (teacher CLS, k={k}, T=0.07, {len(val)} {cfg.data.dataset} val images "
        f"against {len(train)} train images): {scores['top1']:.2f} %",
        flush=True,
    )
    key = {
        "data": cfg.data.dataset,
        "subset": cfg.data.subset,
        "model": [cfg.model.arch, cfg.model.img_size, cfg.model.patch_size],
        "seed": cfg.run.seed,
    }
    ref = reference_knn(
        random_backbone,
        train,
        val,
        resolve_device(cfg.run.device),
        k=k,
        cache=Path(cfg.run.output_dir) / "reference_knn.json",
        key=key,
    )
    print(
        f"  same split and protocol: raw pixels {ref['raw_pixels']:.2f} %, "
        f"this ViT with random weights {ref['random_weights']:.2f} %"
    )
