"""Each backbone family's builder, in one table above the families (``models/spec.py`` only
describes shapes): a :class:`BackboneSpec` from an arch name, and a backbone from a spec.
A new family is one entry in :data:`BUILDERS` (see ``docs/architecture.md``)."""

from __future__ import annotations

from collections.abc import Callable

from mimkit.errors import ConfigError
from mimkit.models.backbone import Backbone
from mimkit.models.spec import PRESETS, TIMM_PREFIX, BackboneSpec, arch_names
from mimkit.models.swin import SwinTransformer
from mimkit.models.timm_vit import TimmViT, timm_spec
from mimkit.models.vit import VisionTransformer


def _vit(spec: BackboneSpec, drop_path_rate: float, pos_interpolation: str) -> Backbone:
    return VisionTransformer(
        img_size=spec.img_size,
        patch_size=spec.patch_size,
        in_chans=spec.in_chans,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        mlp_ratio=spec.mlp_ratio,
        qkv_bias=spec.qkv_bias,
        drop_path_rate=drop_path_rate,
        pos_interpolation=pos_interpolation,
    )


# family -> (spec, drop path rate, position-embedding interpolation) -> backbone
BUILDERS: dict[str, Callable[[BackboneSpec, float, str], Backbone]] = {
    "vit": _vit,
    "swin": lambda spec, drop_path_rate, _: SwinTransformer(spec, drop_path_rate),
    "timm": lambda spec, drop_path_rate, _: TimmViT(spec, drop_path_rate),
}


def build_backbone(
    spec: BackboneSpec, drop_path_rate: float = 0.0, pos_interpolation: str = "size"
) -> Backbone:
    """The backbone ``spec`` describes; ``pos_interpolation`` (mimkit's ViT only) is how
    smaller crops get their position embeddings (``models/vit.py``)."""
    spec.check()
    if pos_interpolation != "size" and spec.family != "vit":
        raise ConfigError(
            f"model.pos_interpolation {pos_interpolation!r} applies to mimkit's ViT "
            f"only, not to {spec.arch}"
        )
    return BUILDERS[spec.family](spec, drop_path_rate, pos_interpolation)


def backbone_spec(
    arch: str, img_size: int | None = None, patch_size: int | None = None, in_chans: int = 3
) -> BackboneSpec:
    """The spec of a preset or ``timm:NAME``, optionally at another image or patch size."""
    if arch.startswith(TIMM_PREFIX):
        return timm_spec(arch, img_size, patch_size, in_chans).check()
    if arch not in PRESETS:
        raise ConfigError(f"unknown arch {arch!r}; choose one of {arch_names()}")
    p = PRESETS[arch]
    spec = p.replace(
        img_size=img_size or p.img_size, patch_size=patch_size or p.patch_size, in_chans=in_chans
    )
    return spec.check()


def build_vit(
    arch: str,
    img_size: int | None = None,
    patch_size: int | None = None,
    drop_path_rate: float = 0.0,
    in_chans: int = 3,
) -> Backbone:
    """Build a preset backbone (any family, despite the name), optionally at another image
    or patch size."""
    return build_backbone(backbone_spec(arch, img_size, patch_size, in_chans), drop_path_rate)
