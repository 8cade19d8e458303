"""``mimkit masks``: pictures of the teacher's attention and of the masks every strategy draws."""

from __future__ import annotations

import argparse
from pathlib import Path

from mimkit.commands.argtypes import open_unit_float, positive_int, unit_float
from mimkit.commands.evalargs import add_model_args, model_source
from mimkit.errors import ConfigError
from mimkit.runs.paths import writable_folder

MAIN_CONFIG = "fashion_mnist_vit_mini"  # random weights default to the main command's model
# Shown by default: every mode, and high with each score kind (those the backbone can give).
DEFAULT_STRATEGIES: tuple[str, ...] = (
    "high",
    "low",
    "hint",
    "high@raw:0",
    "high@log",
    "high@power",
    "high@rollout",
    "random",
    "block",
    "green",
    "mix@raw",
    "sample@log",
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "masks",
        help="pictures of the teacher's attention and of each strategy's masks",
        description=(
            "For each image, one PNG with: the image, the head-mean CLS attention of chosen "
            "blocks, the attention rollout over all blocks, and the mask every chosen strategy "
            "draws (masked patches tinted), all from one teacher forward pass, at a fixed "
            "ratio with every image masked. Without --checkpoint the model has random weights."
        ),
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--checkpoint", help="mimkit checkpoint, DINO/iBOT file, state dict, safetensors"
    )
    add_model_args(m, arch_help=f"backbone (random weights: the model of {MAIN_CONFIG})")
    src = p.add_argument_group("images").add_mutually_exclusive_group()
    src.add_argument("--images", nargs="+", metavar="FILE_OR_FOLDER", help="image files/folders")
    src.add_argument("--data", help="data spec to sample from (default: embedded)")
    g = p.add_argument_group("images (continued)")
    g.add_argument("--split", default="val", help="split of --data (default: val)")
    g.add_argument(
        "--num-images",
        type=positive_int,
        help="first N images of --data (default 4), or at most N of --images",
    )
    g.add_argument(
        "--normalize",
        choices=("auto", "imagenet", "fashion-mnist", "mnist"),
        default="auto",
        help="input statistics; auto: from --data, else the checkpoint's data set, else "
        "embedded without a checkpoint, else imagenet",
    )
    k = p.add_argument_group("masks")
    k.add_argument(
        "--strategies",
        nargs="+",
        metavar="MODE[@SCORE]",
        help=f"strategies to show (default: {' '.join(DEFAULT_STRATEGIES)})",
    )
    k.add_argument(
        "--layers",
        nargs="+",
        type=int,
        help="blocks whose CLS attention to show (default: first, middle, last; -1 = last)",
    )
    k.add_argument("--ratio", type=open_unit_float, default=0.4, help="mask ratio (default 0.4)")
    k.add_argument("--show-max", type=float, default=0.1, help="hint's top fraction (0.1)")
    k.add_argument("--seed", type=int, default=0, help="seed for masks and random weights")
    k.add_argument(
        "--progress",
        type=unit_float,
        default=1.0,
        help="point of training, 0 to 1, at which mix's alpha schedule is read (default 1)",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--output-dir",
        help="where the PNGs go (default: masks/ next to the checkpoint, or runs/masks)",
    )
    o.add_argument("--columns", type=positive_int, default=5, help="panels per row (5)")
    o.add_argument("--panel-size", type=positive_int, default=200, help="panel pixels (200)")
    o.add_argument("--batch-size", type=positive_int, default=32)
    o.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 ...")
    p.set_defaults(run=run)
    return p


def _normalization(args: argparse.Namespace, checkpoint: Path | None):
    from mimkit.data import IMAGENET_MEAN, IMAGENET_STD, default_normalization

    if args.normalize == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if args.normalize != "auto":
        return default_normalization("embedded" if args.normalize == "fashion-mnist" else "mnist:-")
    if args.data is not None or not args.images:
        return default_normalization(args.data or "embedded")
    if checkpoint is None:
        return default_normalization("embedded")
    from mimkit.weights import training_config

    spec = (training_config(checkpoint) or {}).get("data", {}).get("dataset")
    spec = spec if isinstance(spec, str) else None
    return default_normalization(spec) if spec else (IMAGENET_MEAN, IMAGENET_STD)


def _build_model(args: argparse.Namespace, checkpoint: Path | None):
    import torch

    from mimkit.models import build_vit

    if checkpoint is None:
        if args.interpolate_pos_embed:
            raise ConfigError("--interpolate-pos-embed needs a --checkpoint")
        torch.manual_seed(args.seed)
        arch, size, patch = args.arch, args.img_size, args.patch_size
        if arch is None:
            from mimkit.ibot.config import load_config

            main = load_config(MAIN_CONFIG).model
            arch, size, patch = main.arch, size or main.img_size, patch or main.patch_size
        model = build_vit(arch, size, patch)
        return model, arch, f"random weights ({arch}, seed {args.seed})"
    from mimkit.weights import load_source

    model, spec, notes = load_source(model_source(args, checkpoint))
    for note in notes:
        print(f"note: {note}")
    return model, spec.arch or "this ViT", f"{checkpoint.name} [{args.checkpoint_key}]"


def _score_heads(strategies, checkpoint: Path | None, dim: int):
    """The heads of the learned scores the strategies use (``pred``, ``adv``), from the
    checkpoint that trained them."""
    from mimkit.viz.masks import learned_kinds, learned_score_heads

    kinds = learned_kinds(strategies)
    if kinds and checkpoint is None:
        raise ConfigError(
            f"the learned score {kinds[0]!r} needs --checkpoint: a mimkit run that trained it"
        )
    return learned_score_heads(strategies, checkpoint, dim) if checkpoint else {}


def run(args: argparse.Namespace) -> int:
    # Imported here: torch and the models load only when a command runs, not for --help.
    from mimkit.data import eval_transform
    from mimkit.devices import resolve_device
    from mimkit.viz.inputs import load_dataset_samples, load_image_files
    from mimkit.viz.masks import (
        compute_masks,
        image_panels,
        render_masks,
        resolve_layers,
        resolve_strategies,
        to_display,
    )

    # Check everything before writing anything.
    if not 0.0 < args.show_max <= 1.0:
        raise ConfigError(f"--show-max must lie in (0, 1], got {args.show_max}")
    checkpoint = Path(args.checkpoint).expanduser() if args.checkpoint else None
    if args.output_dir:
        out_dir = Path(args.output_dir).expanduser()
    elif checkpoint is not None:
        out_dir = checkpoint.parent / "masks"
    else:
        out_dir = Path("runs") / "masks"
    device = resolve_device(args.device)
    model, arch, source = _build_model(args, checkpoint)
    layers = resolve_layers(args.layers, model.depth)
    texts = args.strategies or DEFAULT_STRATEGIES
    strategies = resolve_strategies(
        texts, model.depth, model.readouts, arch, defaults=args.strategies is None
    )
    score_heads = _score_heads(strategies, checkpoint, model.embed_dim)
    mean, std = _normalization(args, checkpoint)
    transform = eval_transform(model.img_size, mean, std)
    if args.images:
        inputs = load_image_files(args.images, transform, args.num_images)
    else:
        inputs = load_dataset_samples(
            args.data or "embedded", args.split, args.num_images or 4, transform
        )
    images = inputs.images
    in_chans = model.in_chans
    if in_chans == 1:
        images = images.mean(dim=1, keepdim=True)
    elif in_chans != 3:
        raise ConfigError(f"the model takes {in_chans}-channel images; only 1 or 3 are supported")

    writable_folder(out_dir)  # before the work: a path that cannot be written is one line
    result = compute_masks(
        model.to(device),
        images,
        strategies,
        layers,
        args.ratio,
        seed=args.seed,
        show_max=args.show_max,
        batch_size=args.batch_size,
        progress=args.progress,
        score_heads=score_heads,
    )
    for i, (name, caption) in enumerate(zip(inputs.names, inputs.captions, strict=True)):
        display = to_display(inputs.images[i], mean, std)
        panels = image_panels(display, result, i)
        header = f"{caption}  |  {source}  |  ratio {args.ratio:g}, seed {args.seed}"
        path = out_dir / f"{name}.png"
        render_masks(panels, path, header, args.columns, args.panel_size)  # whole or not at all
        print(f"wrote {path}")
    return 0
