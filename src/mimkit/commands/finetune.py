"""``mimkit finetune``: end-to-end fine-tuning with a linear classifier (iBOT / BEiT)."""

from __future__ import annotations

import argparse
import sys

from mimkit.commands.argtypes import positive_float, positive_int, subset_arg
from mimkit.commands.config_args import Flags, add_config_arguments, config_overrides
from mimkit.errors import NonFiniteLossError

FLAGS: Flags = {
    "--init": ("run.init", str, "backbone weights (any file mimkit knn reads) or 'random'"),
    "--checkpoint-key": ("run.init_key", str, "teacher (default) or student"),
    "--data": ("data.dataset", str, "data set: embedded, a folder, cifar10:DIR, ..."),
    "--val-data": ("data.val_dataset", str, "val data set (default: the val split of --data)"),
    "--subset": ("data.subset", subset_arg, "labels kept per class: 0.01 or 1%%, or a count"),
    "--val-subset": ("data.val_subset", subset_arg, "evaluate on part of the val split"),
    "--output-dir": ("run.output_dir", str, "default: INIT's folder/finetune[_subsetS]"),
    "--epochs": ("optim.epochs", positive_int, "number of epochs"),
    "--batch-size": ("optim.batch_size", positive_int, "images per process and step"),
    "--lr": ("optim.lr", positive_float, "peak learning rate at a total batch of 256"),
    "--layer-decay": ("optim.layer_decay", positive_float, "layer-wise LR decay (1: none)"),
    "--weight-decay": ("optim.weight_decay", float, "AdamW weight decay (weights only)"),
    "--warmup-epochs": ("optim.warmup_epochs", float, "linear warm-up epochs"),
    "--drop-path": ("model.drop_path_rate", float, "stochastic depth rate of the last block"),
    "--mixup": ("augment.mixup", float, "Mixup alpha (0: off)"),
    "--cutmix": ("augment.cutmix", float, "CutMix alpha (0: off)"),
    "--label-smoothing": ("augment.label_smoothing", float, "label smoothing"),
    "--ema": ("optim.ema", float, "average of the weights, its decay per step (0: off)"),
    "--arch": ("model.arch", str, "backbone (preset, timm:NAME): for --init random"),
    "--img-size": ("model.img_size", positive_int, "image size (default: the file's)"),
    "--patch-size": ("model.patch_size", positive_int, "patch size (default: the file's)"),
    "--max-steps": ("run.max_steps", positive_int, "stop after this many steps (smoke tests)"),
    "--device": ("run.device", str, "auto, cpu, cuda or cuda:N"),
    "--amp": ("run.amp", str, "auto (bf16 on CUDA), bf16, fp16 or none"),
    "--seed": ("run.seed", int, "random seed"),
    "--workers": ("data.num_workers", int, "data loader workers per process"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a pretrained backbone end to end with a linear classifier",
        description=(
            "Fine-tune a backbone and a linear classifier on its CLS token (iBOT / BEiT "
            "protocol): AdamW with layer-wise LR decay, warm-up + cosine, drop path, "
            "RandAugment, Mixup/CutMix, label smoothing. Evaluates top-1/top-5 on the val "
            "split after every epoch; writes finetune.json next to the run's checkpoint. "
            "Resumes automatically from OUTPUT_DIR."
        ),
    )
    add_config_arguments(p, FLAGS, "fashion_mnist")
    p.add_argument(
        "--no-knn",
        action="store_true",
        help="skip the frozen starting backbone's k-NN at the end (printed for comparison)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mimkit.data import describe_data_spec
    from mimkit.finetune import build_finetuning, load_finetune_config, run_finetuning
    from mimkit.finetune.results import RESULTS_NAME, frozen_knn_lines, summary_lines

    overrides = config_overrides(args, FLAGS)
    if args.no_knn:
        overrides.append(("run.frozen_knn", False))
    cfg = load_finetune_config(args.config, overrides)
    loop = build_finetuning(cfg, resume=not args.no_resume, resume_from=args.resume)
    method = loop.method
    main = loop.dist.is_main
    try:
        if main:
            d, data = method.init.description, method.data
            print(
                f"mimkit finetune: {d.get('arch') or 'ViT'} {d['img_size']}px/{d['patch_size']} "
                f"from {method.init.source}, data {describe_data_spec(cfg.data.dataset)} "
                f"({len(data.train)} train images, {data.num_classes} classes, "
                f"{len(data.val)} val), {loop.steps_per_epoch} steps/epoch, "
                f"device {loop.device}, output {loop.out}"
                + (f", resuming at step {loop.start_step}" if loop.start_step else ""),
                flush=True,
            )
            for note in method.report.notes:
                print(f"note: {note}")
        try:
            result = run_finetuning(loop)
        except NonFiniteLossError as err:
            if main:
                print(f"mimkit finetune: error: {err}", file=sys.stderr)
            return 3
        if result.status == "stopped":
            if main:
                print(f"mimkit finetune: stopped at step {result.step}; rerun to resume.")
            return 130
        if not main:
            return 0
        print(f"mimkit finetune: {result.status} at step {result.step}")
        if result.history:
            for line in summary_lines(result.history):
                print(line)
            if result.frozen_knn:
                for line in frozen_knn_lines(result.history, result.frozen_knn):
                    print(line)
            print(f"wrote {result.output_dir / RESULTS_NAME}")
        return 0
    finally:
        loop.close()
