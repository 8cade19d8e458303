"""One typed description of a backbone, :class:`BackboneSpec`, for presets, training configs,
checkpoints and exports, and the named presets of each family.

Families: ``vit`` (mimkit's ViT, ``models/vit.py``), ``swin`` (mimkit's Swin,
``models/swin.py``) and ``timm`` (``timm:NAME``: a timm ``VisionTransformer``, built by timm,
``models/timm_vit.py``). Everything that only needs arithmetic (mask grid, number of patches,
depth, supported read-outs) is answered here without building a model; building one is
``models/families.py``'s, which knows each family's class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mimkit.errors import ConfigError
from mimkit.models.backbone import CLS_ROWS, ROLLOUT

FAMILIES = ("vit", "swin", "timm")
TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class BackboneSpec:
    family: str  # vit, swin or timm
    arch: str | None  # preset name, timm:NAME, or None for a ViT without a preset
    img_size: int
    patch_size: int
    embed_dim: int  # ViT: width; Swin: width of the first stage
    depth: int  # attention blocks (Swin: all stages together)
    num_heads: int  # ViT: heads; Swin: heads of the first stage
    in_chans: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    depths: tuple[int, ...] = ()  # Swin: blocks per stage
    window: int = 0  # Swin: window side
    cls_token: bool = True  # False for a Swin and for timm ViTs without one

    # -- arithmetic -----------------------------------------------------------------------
    @property
    def readouts(self) -> frozenset[str]:
        """Attention read-outs the backbone supports: both with a CLS token, else none."""
        return frozenset({CLS_ROWS, ROLLOUT}) if self.cls_token else frozenset()

    @property
    def stage_strides(self) -> tuple[int, ...]:
        """Pixels per token at each stage (one stage for a ViT)."""
        stages = len(self.depths) if self.family == "swin" else 1
        return tuple(self.patch_size * 2**s for s in range(stages))

    def grid_size(self, img_size: int | None = None) -> int:
        """Side of the mask grid: a ViT's patch grid, a Swin's final-stage grid."""
        return (img_size or self.img_size) // self.stage_strides[-1]

    @property
    def num_patches(self) -> int:
        return self.grid_size() ** 2

    def check(self) -> BackboneSpec:
        """ConfigError naming the first geometry this backbone cannot be built with."""
        size, patch = self.img_size, self.patch_size
        if size < 1 or patch < 1:
            raise ConfigError(f"image size {size} and patch size {patch} must be positive")
        if size % patch:
            raise ConfigError(f"image size {size} is not divisible by patch size {patch}")
        if self.family == "swin":
            stride = self.stage_strides[-1]
            if size % stride:
                raise ConfigError(
                    f"image size {size} is not divisible by {stride}, the final-stage stride "
                    f"of {self.arch} with {patch} px patches ({len(self.depths)} stages)"
                )
        elif self.embed_dim % self.num_heads:
            raise ConfigError(f"embed dim {self.embed_dim} is not divisible by {self.num_heads}")
        return self

    # -- building and describing ----------------------------------------------------------
    def replace(self, **changes: Any) -> BackboneSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["depths"] = list(self.depths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneSpec:
        """What :meth:`to_dict` wrote, or a description written before Swin and timm
        backbones (a ViT's fields only, no ``family``). TypeError when it is neither."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        values.setdefault("family", "vit")
        values["depths"] = tuple(values.get("depths", ()))
        return cls(**values)

    def metadata(self) -> dict[str, str]:
        """The spec as strings (safetensors metadata); :meth:`from_metadata` reads it back."""
        d = self.to_dict()
        d["arch"] = self.arch or ""
        d["depths"] = ",".join(str(x) for x in self.depths)
        return {k: repr(v) if isinstance(v, float) else str(v) for k, v in d.items()}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> BackboneSpec:
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, text in meta.items():
            if key not in kinds:
                continue
            try:
                if key == "depths":
                    values[key] = tuple(int(x) for x in text.split(",") if x)
                elif key in ("family", "arch"):
                    values[key] = text or None
                elif key in ("qkv_bias", "cls_token"):
                    values[key] = text.lower() == "true"
                elif key == "mlp_ratio":
                    values[key] = float(text)
                else:
                    values[key] = int(text)
            except ValueError:
                raise ConfigError(f"bad metadata {key}={text!r}") from None
        values.setdefault("family", "vit")
        return cls(**values)


def _vit(dim: int, depth: int, heads: int, patch: int, size: int) -> BackboneSpec:
    return BackboneSpec("vit", None, size, patch, dim, depth, heads)


def _swin(
    dim: int, depths: tuple[int, ...], heads: int, window: int, patch: int, size: int
) -> BackboneSpec:
    return BackboneSpec(
        "swin",
        None,
        size,
        patch,
        dim,
        sum(depths),
        heads,
        depths=depths,
        window=window,
        cls_token=False,
    )


# The ``*_p16`` ViT sizes are the usual 224 px ones; the small-image presets are for CPU work
# on 32 px images with 4 px patches. Swin-T/S/B are iBOT's (224 px, window 7; heads double
# at every stage); swin_nano is a two-stage Swin for CPUs and tests.
PRESETS: dict[str, BackboneSpec] = {
    "vit_tiny": _vit(192, 12, 3, 16, 224),
    "vit_small": _vit(384, 12, 6, 16, 224),
    "vit_base": _vit(768, 12, 12, 16, 224),
    "vit_large": _vit(1024, 24, 16, 16, 224),
    "vit_mini": _vit(192, 6, 3, 4, 32),
    "vit_micro": _vit(128, 4, 4, 4, 32),
    "vit_nano": _vit(64, 3, 2, 4, 16),
    "swin_tiny": _swin(96, (2, 2, 6, 2), 3, 7, 4, 224),
    "swin_small": _swin(96, (2, 2, 18, 2), 3, 7, 4, 224),
    "swin_base": _swin(128, (2, 2, 18, 2), 4, 7, 4, 224),
    "swin_nano": _swin(32, (2, 2), 2, 4, 2, 16),
}
PRESETS = {name: spec.replace(arch=name) for name, spec in PRESETS.items()}


def arch_names() -> str:
    return ", ".join(PRESETS) + f", {TIMM_PREFIX}NAME"
