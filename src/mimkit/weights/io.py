"""Backbone weights in and out: mimkit checkpoints, DINO/iBOT files, timm state dicts and
safetensors exports.

Files are read only with ``torch.load(..., weights_only=True)`` or safetensors: nothing in a
weights file can run code.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from mimkit.errors import CheckpointError, ConfigError, OutputError, output_error
from mimkit.models import PRESETS, VisionTransformer, build_vit
from mimkit.output_paths import default_file_mode, writable_folder
from mimkit.weights.safe_load import read_torch_file

# Heads per embed dim of the usual ViT sizes (all presets agree; timm uses the same).
HEADS_BY_DIM: dict[int, int] = {p.embed_dim: p.num_heads for p in PRESETS.values()}
HEADS_BY_DIM.update({192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16})

CONFIG_KEYS = ("arch", "img_size", "patch_size", "embed_dim", "depth", "num_heads")
_INT_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "in_chans")


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


def _config_from_metadata(meta: dict[str, str] | None) -> dict[str, Any] | None:
    if not meta:
        return None
    cfg: dict[str, Any] = {}
    for k, v in meta.items():
        if k in _INT_KEYS:
            try:
                cfg[k] = int(v)
            except ValueError:
                raise CheckpointError(f"bad metadata {k}={v!r} in the safetensors file") from None
        elif k == "mlp_ratio":
            cfg[k] = float(v)
        elif k == "qkv_bias":
            cfg[k] = v.lower() == "true"
        elif k == "arch":
            cfg[k] = v or None
    return cfg or None


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
        config = _config_from_metadata(meta)
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
            raise CheckpointError(f"not a ViT backbone state dict: missing key {key!r}")
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


def resolve_config(
    sd: dict[str, Tensor],
    file_config: dict[str, Any] | None = None,
    *,
    arch: str | None = None,
    img_size: int | None = None,
    patch_size: int | None = None,
    num_heads: int | None = None,
) -> dict[str, Any]:
    """The full model config: explicit arguments > the file's config > tensor shapes.

    ``arch`` (a preset) supplies embed_dim/depth/num_heads when given; otherwise they are
    inferred from the weights (heads from :data:`HEADS_BY_DIM`, or ``num_heads``).
    """
    inferred = infer_vit_config(sd)
    cfg: dict[str, Any] = dict(inferred)
    file_config = {k: v for k, v in (file_config or {}).items() if v is not None}
    cfg.update({k: file_config[k] for k in file_config if k in (*CONFIG_KEYS, "in_chans")})
    arch = arch or file_config.get("arch")
    if arch is not None:
        if arch not in PRESETS:
            raise ConfigError(f"unknown arch {arch!r}; choose one of {', '.join(PRESETS)}")
        pre = PRESETS[arch]
        cfg.update(arch=arch, embed_dim=pre.embed_dim, depth=pre.depth, num_heads=pre.num_heads)
        cfg.setdefault("img_size", pre.img_size)
        cfg.setdefault("patch_size", pre.patch_size)
    else:
        cfg["arch"] = _match_preset(cfg)
    if img_size is not None:
        cfg["img_size"] = int(img_size)
    if patch_size is not None:
        cfg["patch_size"] = int(patch_size)
    if num_heads is not None:
        cfg["num_heads"] = int(num_heads)
    if not cfg.get("num_heads"):
        raise ConfigError(
            f"cannot tell the number of heads for embed dim {cfg['embed_dim']}; "
            "pass --arch or --num-heads"
        )
    if cfg["embed_dim"] % cfg["num_heads"]:
        raise ConfigError(
            f"embed dim {cfg['embed_dim']} is not divisible by {cfg['num_heads']} heads"
        )
    if cfg["img_size"] % cfg["patch_size"]:
        raise ConfigError(
            f"image size {cfg['img_size']} is not divisible by patch size {cfg['patch_size']}"
        )
    return cfg


def _match_preset(cfg: dict[str, Any]) -> str | None:
    for name, p in PRESETS.items():
        if (p.embed_dim, p.depth) == (cfg["embed_dim"], cfg["depth"]) and (
            cfg.get("num_heads") in (None, p.num_heads)
        ):
            return name
    return None


def build_backbone(cfg: dict[str, Any], drop_path_rate: float = 0.0) -> VisionTransformer:
    """A VisionTransformer for a config from :func:`resolve_config`."""
    arch = cfg.get("arch")
    if arch in PRESETS and cfg.get("mlp_ratio", 4.0) == 4.0 and cfg.get("qkv_bias", True):
        model = build_vit(
            arch,
            cfg["img_size"],
            cfg["patch_size"],
            drop_path_rate=drop_path_rate,
            in_chans=cfg.get("in_chans", 3),
        )
        if (model.embed_dim, model.depth, model.num_heads) == (
            cfg["embed_dim"],
            cfg["depth"],
            cfg["num_heads"],
        ):
            return model
    return VisionTransformer(
        img_size=cfg["img_size"],
        patch_size=cfg["patch_size"],
        in_chans=cfg.get("in_chans", 3),
        embed_dim=cfg["embed_dim"],
        depth=cfg["depth"],
        num_heads=cfg["num_heads"],
        mlp_ratio=cfg.get("mlp_ratio", 4.0),
        qkv_bias=cfg.get("qkv_bias", True),
        drop_path_rate=drop_path_rate,
    )


# -- loading ----------------------------------------------------------------------------
def _interpolate_pos_embed(pos: Tensor, n_target: int) -> Tensor:
    n = pos.shape[1] - 1
    g0, g1 = math.isqrt(n), math.isqrt(n_target)
    cls_pos, patch = pos[:, :1], pos[:, 1:]
    patch = patch.reshape(1, g0, g0, -1).permute(0, 3, 1, 2).float()
    patch = F.interpolate(patch, size=(g1, g1), mode="bicubic", align_corners=False)
    patch = patch.permute(0, 2, 3, 1).reshape(1, g1 * g1, -1).to(pos.dtype)
    return torch.cat([cls_pos, patch], dim=1)


def load_backbone(
    source: str | os.PathLike | dict[str, Tensor],
    model: VisionTransformer,
    checkpoint_key: str = "teacher",
    *,
    interpolate_pos_embed: bool = False,
) -> list[str]:
    """Load backbone weights into ``model`` strictly; return notes on what was adapted.

    Refuses (:class:`CheckpointError`) naming the first missing key, the first unexpected
    key, or the first shape mismatch. ``masked_embed`` (iBOT's mask token, unused at
    evaluation) may be missing from DINO / timm files: it is then filled with zeros and a
    note says so. A ``pos_embed`` for another grid is resized (bicubic) only when
    ``interpolate_pos_embed`` is true.
    """
    if isinstance(source, dict):
        sd, name = _strip_backbone(dict(source)), "state dict"
    else:
        sd, _ = load_backbone_state(source, checkpoint_key)
        name = str(source)
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
        if key == "pos_embed" and got.ndim == 3 and got.shape[-1] == want.shape[-1]:
            n_got, n_want = got.shape[1] - 1, want.shape[1] - 1
            square = math.isqrt(n_got) ** 2 == n_got and math.isqrt(n_want) ** 2 == n_want
            if interpolate_pos_embed and square:
                sd[key] = _interpolate_pos_embed(got, n_want)
                notes.append(
                    f"pos_embed resized from a {math.isqrt(n_got)}^2 to a "
                    f"{math.isqrt(n_want)}^2 grid (bicubic)"
                )
                continue
            raise CheckpointError(
                f"{name}: pos_embed is for a {math.isqrt(n_got)}x{math.isqrt(n_got)} grid but "
                f"the model has {math.isqrt(n_want)}x{math.isqrt(n_want)}; use the file's image "
                "size, or allow interpolation (--interpolate-pos-embed)"
            )
        raise CheckpointError(
            f"{name}: shape mismatch for {key!r}: file {tuple(got.shape)}, "
            f"model {tuple(want.shape)}"
        )
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in sd.items()}, strict=True)
    return notes


def load_pretrained(
    path: str | os.PathLike,
    checkpoint_key: str = "teacher",
    *,
    arch: str | None = None,
    img_size: int | None = None,
    patch_size: int | None = None,
    num_heads: int | None = None,
    interpolate_pos_embed: bool = False,
) -> tuple[VisionTransformer, dict[str, Any], list[str]]:
    """Build the right VisionTransformer for a weights file and load it: ``(model, config,
    notes)``. Explicit arguments override the file's config and the tensor shapes."""
    sd, file_cfg = load_backbone_state(path, checkpoint_key)
    cfg = resolve_config(
        sd, file_cfg, arch=arch, img_size=img_size, patch_size=patch_size, num_heads=num_heads
    )
    model = build_backbone(cfg)
    notes = load_backbone(sd, model, interpolate_pos_embed=interpolate_pos_embed)
    return model, cfg, notes


# -- export -----------------------------------------------------------------------------
def export_backbone(
    checkpoint: str | os.PathLike,
    out_path: str | os.PathLike,
    checkpoint_key: str = "teacher",
    *,
    arch: str | None = None,
    img_size: int | None = None,
    patch_size: int | None = None,
    num_heads: int | None = None,
) -> dict[str, Any]:
    """Write the backbone as a safetensors file loadable with ``strict=True`` into
    ``timm.models.vision_transformer.VisionTransformer(img_size, patch_size, embed_dim,
    depth, num_heads, num_classes=0)`` (``masked_embed`` dropped). The model config goes in
    the file's metadata, so mimkit can rebuild the model from the export alone. Returns it.
    """
    out = Path(out_path)
    if out.suffix != ".safetensors":
        raise ConfigError(f"{out}: the export must end in .safetensors")
    if out.is_dir():
        raise OutputError(f"cannot write {out}: it is a folder")
    writable_folder(out.parent)  # before reading the checkpoint
    model, cfg, _ = load_pretrained(
        checkpoint,
        checkpoint_key,
        arch=arch,
        img_size=img_size,
        patch_size=patch_size,
        num_heads=num_heads,
    )
    tensors = {
        k: v.detach().contiguous().clone()
        for k, v in model.state_dict().items()
        if k != "masked_embed"
    }
    meta = {
        "format": "mimkit-vit",
        "arch": cfg.get("arch") or "",
        "img_size": str(cfg["img_size"]),
        "patch_size": str(cfg["patch_size"]),
        "embed_dim": str(cfg["embed_dim"]),
        "depth": str(cfg["depth"]),
        "num_heads": str(cfg["num_heads"]),
        "in_chans": str(cfg.get("in_chans", 3)),
        "mlp_ratio": repr(float(cfg.get("mlp_ratio", 4.0))),
        "qkv_bias": str(bool(cfg.get("qkv_bias", True))),
        "source": Path(checkpoint).name,
        "checkpoint_key": checkpoint_key,
    }
    _write_safetensors(tensors, out, meta)
    return {k: cfg.get(k) for k in (*CONFIG_KEYS, "in_chans", "mlp_ratio", "qkv_bias")}


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
