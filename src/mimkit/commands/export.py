"""``mimkit export``: a checkpoint's backbone as a safetensors file that timm loads strictly."""

from __future__ import annotations

import argparse
from pathlib import Path

from mimkit.commands.evalargs import add_model_args
from mimkit.errors import CheckpointError, OutputError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint's backbone to .safetensors (timm-compatible)",
        description=(
            "Write the backbone (teacher by default) as safetensors whose keys load with "
            "strict=True into the matching timm model (VisionTransformer, SwinTransformer, "
            "or timm:NAME's own model), with num_classes=0. iBOT's masked_embed is dropped. "
            "The backbone's description is stored in the file's metadata."
        ),
    )
    p.add_argument("checkpoint", help="mimkit checkpoint, DINO/iBOT file or state dict")
    p.add_argument("out", help="output path, ending in .safetensors")
    add_model_args(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    # Imported here: torch and the models load only when a command runs, not for --help.
    from mimkit.weights.export import export_backbone, timm_constructor

    out = Path(args.out).expanduser()
    if out.is_dir():
        raise OutputError(f"cannot write {out}: it is a folder")
    if out.exists() and not args.force:
        raise CheckpointError(f"{out} exists; pass --force to overwrite it")
    if args.interpolate_pos_embed:
        raise CheckpointError(
            "export keeps the file's pos_embed; --interpolate-pos-embed does not apply"
        )
    spec = export_backbone(
        args.checkpoint,
        out,
        args.checkpoint_key,
        arch=args.arch,
        img_size=args.img_size,
        patch_size=args.patch_size,
        num_heads=args.num_heads,
    )
    print(f"wrote {out}")
    print(
        f"timm: {timm_constructor(spec)}"
        ".load_state_dict(safetensors.torch.load_file(...), strict=True)"
    )
    return 0
