"""Backbone weights in: mimkit checkpoints, DINO/iBOT files, timm state dicts and mimkit's
safetensors exports (written by :mod:`mimkit.weights.export`).

Files are read only with ``torch.load(..., weights_only=True)`` or safetensors: nothing in a
weights file can run code.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from mimkit.errors import CheckpointError, ConfigError
from mimkit.models import PRESETS, Backbone, BackboneSpec, backbone_spec, build_backbone
from mimkit.models.vit import resize_pos_embed
from mimkit.weights.safe_load import read_torch_file

# Heads per embed dim of the usual ViT sizes (all ViT presets agree; timm uses the same).
HEADS_BY_DIM: dict[int, int] = {
    p.embed_dim: p.num_heads for p in PRESETS.values() if p.family == "vit"
}
HEADS_BY_DIM.update({192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16})

# What a file's config may say about a ViT (a training config, or an export's metadata).
VIT_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "in_chans")
_INT_KEYS = VIT_KEYS


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def _strip_backbone(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop ``module.`` (DDP) prefixes, keep only ``backbone.*`` when present (dropping the
    projection ``head.*``), and drop a classifier ``head.*`` of a plain timm state dict."""
    sd = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in sd.items()}
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    return {k: v for k, v in sd.items() if not (k == "head" or k.startswith("head."))}


def load_backbone_state(
    path: str | os.PathLike, checkpoint_key: str = "teacher"
) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """Read a backbone state dict (ViT keys, no prefix) and the model config if the file has one.

    Understands: a mimkit training checkpoint (``{"student", "teacher", ..., "config"}``,
    keys ``backbone.*`` / ``head.*``); DINO / iBOT official checkpoints (``teacher`` /
    ``student`` holding ``module.backbone.*`` or ``backbone.*`` keys, heads dropped); a plain
    timm / mimkit backbone state dict (``.pth`` / ``.pt``; a classifier ``head.*`` is
    dropped); a ``.safetensors`` export (config read from its metadata).
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file")
    if not p.is_file():
        raise CheckpointError(f"{p}: not a file")
    config: dict[str, Any] | None = None
    if p.suffix == ".safetensors":
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata()
            sd = load_file(str(p))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{p}: not a readable safetensors file ({err})") from None
        config = meta if meta and "format" in meta else None
    else:
        obj = read_torch_file(p)
        if _is_state_dict(obj):
            sd = obj
        elif isinstance(obj, dict):
            if checkpoint_key in obj and isinstance(obj[checkpoint_key], dict):
                sd = obj[checkpoint_key]
            else:
                nested = sorted(k for k, v in obj.items() if isinstance(v, dict) and v)
                raise CheckpointError(
                    f"{p}: checkpoint key {checkpoint_key!r} not found; the file has "
                    f"{', '.join(map(repr, nested)) or 'no state dicts'}"
                )
            cfg = obj.get("config")
            if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
                config = dict(cfg["model"])
            if not _is_state_dict(sd):
                raise CheckpointError(f"{p}: {checkpoint_key!r} does not hold a state dict")
        else:
            raise CheckpointError(f"{p}: expected a dict of tensors, got {type(obj).__name__}")
    sd = _strip_backbone(sd)
    if not sd:
        raise CheckpointError(f"{p}: no backbone weights found (key {checkpoint_key!r})")
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"{p}: {len(bad)} of {len(sd)} backbone tensors hold NaN or infinite values "
            f"(first: {bad[0]}); these weights cannot give features"
        )
    return sd, config


# -- configs ----------------------------------------------------------------------------
def infer_vit_config(sd: dict[str, Tensor]) -> dict[str, Any]:
    """Geometry from tensor shapes: embed_dim, depth, patch_size, img_size, in_chans,
    mlp_ratio, qkv_bias, and num_heads from :data:`HEADS_BY_DIM` (None when unknown)."""
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if key not in sd:
            raise CheckpointError(
                f"not a ViT backbone state dict (missing key {key!r}); for another backbone "
                "pass --arch"
            )
    embed_dim = int(sd["cls_token"].shape[-1])
    w = sd["patch_embed.proj.weight"]
    if w.ndim != 4 or w.shape[-1] != w.shape[-2]:
        raise CheckpointError(f"patch_embed.proj.weight has shape {tuple(w.shape)}")
    patch_size = int(w.shape[-1])
    n = int(sd["pos_embed"].shape[1]) - 1
    grid = math.isqrt(n)
    if grid * grid != n:
        raise CheckpointError(f"pos_embed has {n} patch positions, not a square grid")
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    depth = max(blocks) + 1 if blocks else 0
    cfg: dict[str, Any] = {
        "embed_dim": embed_dim,
        "depth": depth,
        "patch_size": patch_size,
        "img_size": grid * patch_size,
        "in_chans": int(w.shape[1]),
        "num_heads": HEADS_BY_DIM.get(embed_dim),
        "qkv_bias": "blocks.0.attn.qkv.bias" in sd,
    }
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    if fc1 is not None:
        cfg["mlp_ratio"] = fc1.shape[0] / embed_dim
    return cfg


def _in_chans(sd: dict[str, Tensor]) -> int:
    for key, value in sd.items():
        if key.endswith("patch_embed.proj.weight") and value.ndim == 4:
            return int(value.shape[1])
    return 3


def _is_vit_arch(arch: str | None) -> bool:
    return arch is None or (arch in PRESETS and PRESETS[arch].family == "vit")


def resolve_spec(
    sd: dict[str, Tensor],
    file_config: dict[str, Any] | None = None,
    *,
    arch: str | None = None,
    img_size: int | None = None,
    patch_size: int | None = None,
    num_heads: int | None = None,
) -> BackboneSpec:
    """The backbone a weights file holds: explicit arguments > the file's config (a mimkit
    checkpoint's ``model`` section or an export's metadata) > tensor shapes.

    A Swin or ``timm:NAME`` arch is built from its description; a ViT's width, depth and
    heads come from its preset when there is one, else from the weights (heads from
    :data:`HEADS_BY_DIM`, or ``num_heads``).
    """
    file_config = {k: v for k, v in (file_config or {}).items() if v not in (None, "")}
    arch = arch or file_config.get("arch")
    if not _is_vit_arch(arch):
        size = img_size or _int(file_config.get("img_size"))
        patch = patch_size or _int(file_config.get("patch_size"))
        return backbone_spec(arch, size, patch, _in_chans(sd))
    cfg: dict[str, Any] = dict(infer_vit_config(sd))
    for key in VIT_KEYS:
        if key in file_config:
            cfg[key] = _int(file_config[key]) if key in _INT_KEYS else file_config[key]
    if arch is not None:
        pre = PRESETS[arch]
        cfg.update(embed_dim=pre.embed_dim, depth=pre.depth, num_heads=pre.num_heads)
        cfg.setdefault("img_size", pre.img_size)
        cfg.setdefault("patch_size", pre.patch_size)
    else:
        arch = _match_preset(cfg)
    explicit = {"img_size": img_size, "patch_size": patch_size, "num_heads": num_heads}
    cfg.update({k: int(v) for k, v in explicit.items() if v is not None})
    if not cfg.get("num_heads"):
        raise ConfigError(
            f"cannot tell the number of heads for embed dim {cfg['embed_dim']}; "
            "pass --arch or --num-heads"
        )
    return BackboneSpec(
        family="vit",
        arch=arch,
        img_size=int(cfg["img_size"]),
        patch_size=int(cfg["patch_size"]),
        embed_dim=int(cfg["embed_dim"]),
        depth=int(cfg["depth"]),
        num_heads=int(cfg["num_heads"]),
        in_chans=int(cfg.get("in_chans", 3)),
        mlp_ratio=float(cfg.get("mlp_ratio", 4.0)),
        qkv_bias=bool(cfg.get("qkv_bias", True)),
    ).check()


def _int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CheckpointError(f"bad model config value {value!r}") from None


def _match_preset(cfg: dict[str, Any]) -> str | None:
    for name, p in PRESETS.items():
        same = (p.family, p.embed_dim, p.depth) == ("vit", cfg["embed_dim"], cfg["depth"])
        if same and cfg.get("num_heads") in (None, p.num_heads):
            return name
    return None


# -- loading ----------------------------------------------------------------------------
def load_backbone(
    source: str | os.PathLike | dict[str, Tensor],
    model: Backbone,
    checkpoint_key: str = "teacher",
    *,
    interpolate_pos_embed: bool = False,
) -> list[str]:
    """Load backbone weights into ``model`` strictly; return notes on what was adapted.

    Refuses (:class:`CheckpointError`) naming the first missing key, the first unexpected
    key, or the first shape mismatch. ``masked_embed`` (iBOT's mask token, unused at
    evaluation) may be missing from DINO / timm files: it is then filled with zeros and a
    note says so. A ``pos_embed`` for another grid is resized (bicubic) only when
    ``interpolate_pos_embed`` is true. A timm backbone also takes timm's own state dict.
    """
    if isinstance(source, dict):
        sd, name = _strip_backbone(dict(source)), "state dict"
    else:
        sd, _ = load_backbone_state(source, checkpoint_key)
        name = str(source)
    prefix = model.external_prefix
    if prefix and not any(k.startswith(prefix) for k in sd):
        sd = {(k if k == "masked_embed" else prefix + k): v for k, v in sd.items()}
    target = model.state_dict()
    notes: list[str] = []
    for key in target:
        if key not in sd:
            if key == "masked_embed":
                sd[key] = torch.zeros_like(target[key])
                notes.append(
                    "masked_embed is missing (a DINO/timm file): filled with zeros; it is "
                    "iBOT's mask token and is not used for evaluation"
                )
                continue
            raise CheckpointError(f"{name}: missing key {key!r} for this model")
    for key in sd:
        if key not in target:
            raise CheckpointError(f"{name}: unexpected key {key!r} (not in this model)")
    for key, want in target.items():
        got = sd[key]
        if got.shape == want.shape:
            continue
        if key == "masked_embed" and got.numel() == want.numel():
            sd[key] = got.reshape(want.shape)
            continue
        if key.endswith("pos_embed") and got.ndim == 3 and got.shape[-1] == want.shape[-1]:
            sd[key] = _resized_pos_embed(name, got, want, model.grid_size(), interpolate_pos_embed)
            g0 = math.isqrt(got.shape[1] - (want.shape[1] - model.grid_size() ** 2))
            grid = model.grid_size()
            notes.append(f"pos_embed resized from a {g0}^2 to a {grid}^2 grid (bicubic)")
            continue
        raise CheckpointError(
            f"{name}: shape mismatch for {key!r}: file {tuple(got.shape)}, "
            f"model {tuple(want.shape)}"
        )
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in sd.items()}, strict=True)
    return notes


def _resized_pos_embed(name: str, got: Tensor, want: Tensor, grid: int, allowed: bool) -> Tensor:
    prefix = want.shape[1] - grid * grid  # CLS (and register) positions
    n_got = got.shape[1] - prefix
    g0 = math.isqrt(n_got)
    if g0 * g0 != n_got or not allowed:
        raise CheckpointError(
            f"{name}: pos_embed is for a {g0}x{g0} grid but the model has {grid}x{grid}; "
            "use the file's image size, or allow interpolation (--interpolate-pos-embed)"
        )
    return resize_pos_embed(got, grid, grid, prefix)


@dataclass(frozen=True)
class ModelSource:
    """Where a backbone comes from: a weights file (any layout mimkit reads) and, for files
    that do not describe their model, the description to use."""

    checkpoint: Path
    checkpoint_key: str = "teacher"
    arch: str | None = None
    img_size: int | None = None
    patch_size: int | None = None
    num_heads: int | None = None
    interpolate_pos_embed: bool = False


def load_source(source: ModelSource) -> tuple[Backbone, BackboneSpec, list[str]]:
    return load_pretrained(
        source.checkpoint,
        source.checkpoint_key,
        arch=source.arch,
        img_size=source.img_size,
        patch_size=source.patch_size,
        num_heads=source.num_heads,
        interpolate_pos_embed=source.interpolate_pos_embed,
    )


def training_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The pretraining config a mimkit checkpoint holds; None for any other file."""
    p = Path(path)
    if p.suffix == ".safetensors" or not p.is_file():
        return None
    try:
        obj = read_torch_file(p)
    except CheckpointError:
        return None  # not a checkpoint mimkit can read safely: it records no config
    cfg = obj.get("config") if isinstance(obj, dict) else None
    return cfg if isinstance(cfg, dict) else None


def load_pretrained(
    path: str | os.PathLike,
    checkpoint_key: str = "teacher",
    *,
    arch: str | None = None,
    img_size: int | None = None,
    patch_size: int | None = None,
    num_heads: int | None = None,
    interpolate_pos_embed: bool = False,
) -> tuple[Backbone, BackboneSpec, list[str]]:
    """Build the right backbone for a weights file and load it: ``(model, spec, notes)``.
    Explicit arguments override the file's config and the tensor shapes."""
    sd, file_cfg = load_backbone_state(path, checkpoint_key)
    spec = resolve_spec(
        sd, file_cfg, arch=arch, img_size=img_size, patch_size=patch_size, num_heads=num_heads
    )
    model = build_backbone(spec)
    notes = load_backbone(sd, model, interpolate_pos_embed=interpolate_pos_embed)
    return model, spec, notes
