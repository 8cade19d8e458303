"""The backbone as a safetensors file that timm loads with ``strict=True``, its description in
the file's metadata so that mimkit rebuilds the model from the export alone."""

from __future__ import annotations

import os
import re
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor

from mimkit.errors import ConfigError, OutputError, output_error
from mimkit.models import BackboneSpec
from mimkit.models.spec import TIMM_PREFIX
from mimkit.runs.paths import default_file_mode, writable_folder
from mimkit.weights.io import load_pretrained

EXPORT_FORMAT = "mimkit-backbone"


def timm_constructor(spec: BackboneSpec) -> str:
    """The timm call whose model loads an export of ``spec`` with ``strict=True``."""
    if spec.family == "timm":
        assert spec.arch is not None
        return (
            f"timm.create_model({spec.arch.removeprefix(TIMM_PREFIX)!r}, num_classes=0, "
            f"img_size={spec.img_size}, patch_size={spec.patch_size})"
        )
    if spec.family == "swin":
        heads = tuple(spec.num_heads * 2**s for s in range(len(spec.depths)))
        return (
            f"timm.models.swin_transformer.SwinTransformer(img_size={spec.img_size}, "
            f"patch_size={spec.patch_size}, embed_dim={spec.embed_dim}, "
            f"depths={tuple(spec.depths)}, num_heads={heads}, window_size={spec.window}, "
            "num_classes=0)"
        )
    return (
        f"timm.models.vision_transformer.VisionTransformer(img_size={spec.img_size}, "
        f"patch_size={spec.patch_size}, embed_dim={spec.embed_dim}, depth={spec.depth}, "
        f"num_heads={spec.num_heads}, num_classes=0)"
    )


def export_backbone(
    checkpoint: str | os.PathLike,
    out_path: str | os.PathLike,
    checkpoint_key: str = "teacher",
    *,
    arch: str | None = None,
    img_size: int | None = None,
    patch_size: int | None = None,
    num_heads: int | None = None,
) -> BackboneSpec:
    """Write the backbone as a safetensors file that :func:`timm_constructor`'s model loads
    with ``strict=True`` (``masked_embed`` dropped, timm's own names). The backbone's
    description goes in the file's metadata, so mimkit rebuilds the model from the export
    alone. Returns it.
    """
    out = Path(out_path)
    if out.suffix != ".safetensors":
        raise ConfigError(f"{out}: the export must end in .safetensors")
    if out.is_dir():
        raise OutputError(f"cannot write {out}: it is a folder")
    writable_folder(out.parent)  # before reading the checkpoint
    model, spec, _ = load_pretrained(
        checkpoint,
        checkpoint_key,
        arch=arch,
        img_size=img_size,
        patch_size=patch_size,
        num_heads=num_heads,
    )
    prefix = model.external_prefix
    tensors = {
        k.removeprefix(prefix): v.detach().contiguous().clone()
        for k, v in model.state_dict().items()
        if k != "masked_embed"
    }
    meta = {
        "format": EXPORT_FORMAT,
        **spec.metadata(),
        "source": Path(checkpoint).name,
        "checkpoint_key": checkpoint_key,
    }
    _write_safetensors(tensors, out, meta)
    return spec


def _write_safetensors(tensors: dict[str, Tensor], out: Path, meta: dict[str, str]) -> None:
    """safetensors writes a temporary file and renames it (atomic, but mode 0600): errors
    become one line naming the path and the cause; the file gets the usual permissions."""
    try:
        save_file(tensors, str(out), metadata=meta)
    except Exception as err:  # safetensors' own error type, with the OS error number inside
        code = re.search(r"os error (\d+)", str(err))
        if code is None:
            raise
        errno_ = int(code.group(1))
        raise output_error(out, OSError(errno_, os.strerror(errno_))) from None
    os.chmod(out, default_file_mode())
