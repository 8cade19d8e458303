"""``mimkit pretrain``: iBOT pretraining with attention-guided (or random/block) masks."""

from __future__ import annotations

import argparse
import sys
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

    from mimkit.data import describe_data_spec

    def announce(loop: TrainLoop) -> None:
        if loop.dist.is_main:
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
    from mimkit.ibot.pretrain import knn_references

    ref = knn_references(cfg, int(scores["k"]))
    print(
        f"k-NN top-1 (teacher CLS, k={int(scores['k'])}, T=0.07, {ref['num_val']} "
        f"{cfg.data.dataset} val images against {ref['num_train']} train images): "
        f"{scores['top1']:.2f} %",
        flush=True,
    )
    print(
        f"  same split and protocol: raw pixels {ref['raw_pixels']:.2f} %, "
        f"this ViT with random weights {ref['random_weights']:.2f} %"
    )
