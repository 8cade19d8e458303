"""Command-line arguments shared by the commands that read a backbone (knn, linear, masks,
export), and their translation into the plain values ``mimkit.evaluate.prepare`` takes.

Only the standard library is imported at module level, so that ``mimkit --help`` does not
load torch; the library is imported inside the functions that run a command.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mimkit.commands.argtypes import parse_subset, positive_int

if TYPE_CHECKING:
    from mimkit.evaluate.prepare import EvalSetup
    from mimkit.weights.io import ModelSource


def add_model_args(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    title: str = "model (needed only for files without a mimkit config)",
    arch_help: str = "backbone preset or timm:NAME",
) -> None:
    g = p.add_argument_group(title) if isinstance(p, argparse.ArgumentParser) else p
    g.add_argument("--checkpoint-key", default="teacher", help="teacher (default) or student")
    g.add_argument("--arch", metavar="ARCH", help=arch_help)
    g.add_argument("--img-size", type=positive_int, help="model image size")
    g.add_argument("--patch-size", type=positive_int, help="patch size")
    g.add_argument("--num-heads", type=positive_int, help="attention heads (if not a preset)")
    g.add_argument(
        "--interpolate-pos-embed",
        action="store_true",
        help="resize a pos_embed made for another image size (bicubic)",
    )


def model_source(args: argparse.Namespace, checkpoint: str | Path) -> ModelSource:
    from mimkit.weights.io import ModelSource  # torch: only when a command runs

    return ModelSource(
        checkpoint=Path(checkpoint).expanduser(),
        checkpoint_key=args.checkpoint_key,
        arch=args.arch,
        img_size=args.img_size,
        patch_size=args.patch_size,
        num_heads=args.num_heads,
        interpolate_pos_embed=args.interpolate_pos_embed,
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


def prepare_from_args(args: argparse.Namespace) -> EvalSetup:
    from mimkit.evaluate.prepare import prepare_eval  # torch: only when a command runs

    return prepare_eval(
        model_source(args, args.checkpoint),
        args.data,
        train_split=args.train_split,
        val_split=args.val_split,
        subset=parse_subset(args.subset),
        val_subset=parse_subset(getattr(args, "val_subset", None)),
        device=args.device,
        num_workers=args.num_workers,
        cache=not args.no_cache,
    )


def output_path(args: argparse.Namespace, default_name: str) -> Path:
    """``--output`` (a file, or a folder to put ``default_name`` in), else next to the
    checkpoint."""
    if args.output:
        out = Path(args.output).expanduser()
        if out.is_dir():
            out = out / default_name
        return out
    return Path(args.checkpoint).expanduser().resolve().parent / default_name

