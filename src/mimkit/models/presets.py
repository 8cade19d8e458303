"""Named ViT sizes. The ``*_p16`` sizes are the usual 224 px ones; the small-image presets
are for CPU work on 32 px images with 4 px patches."""

from __future__ import annotations

from dataclasses import dataclass

from mimkit.errors import ConfigError
from mimkit.models.vit import VisionTransformer


@dataclass(frozen=True)
class ViTPreset:
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    img_size: int


PRESETS: dict[str, ViTPreset] = {
    "vit_tiny": ViTPreset(192, 12, 3, 16, 224),
    "vit_small": ViTPreset(384, 12, 6, 16, 224),
    "vit_base": ViTPreset(768, 12, 12, 16, 224),
    "vit_large": ViTPreset(1024, 24, 16, 16, 224),
    # Small-image presets for laptops and tests.
    "vit_mini": ViTPreset(192, 6, 3, 4, 32),
    "vit_micro": ViTPreset(128, 4, 4, 4, 32),
    "vit_nano": ViTPreset(64, 3, 2, 4, 16),
}


def build_vit(
    arch: str,
    img_size: int | None = None,
    patch_size: int | None = None,
    drop_path_rate: float = 0.0,
    in_chans: int = 3,
) -> VisionTransformer:
    """Build a preset ViT, optionally at another image or patch size."""
    if arch not in PRESETS:
        raise ConfigError(f"unknown arch {arch!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[arch]
    size, patch = img_size or p.img_size, patch_size or p.patch_size
    if size % patch:
        raise ConfigError(f"image size {size} is not divisible by patch size {patch}")
    return VisionTransformer(
        img_size=size,
        patch_size=patch,
        in_chans=in_chans,
        embed_dim=p.embed_dim,
        depth=p.depth,
        num_heads=p.num_heads,
        drop_path_rate=drop_path_rate,
    )
