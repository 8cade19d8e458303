"""Config fields that must fit the patch grid, derived when the user changes the grid.

A config file's local crop size fits its own image and patch size (14 px local crops for
28 px images with 7 px patches). When the user changes the image size, the patch size or the
backbone and does not set the local crop size, it is derived again: the multiple of the
backbone's stride closest to the file's ratio of local to global size, at least one patch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mimkit.errors import ConfigError

if TYPE_CHECKING:
    from mimkit.config import ModelConfig, PretrainConfig

GRID_KEYS = ("model.img_size", "model.patch_size", "model.arch")
LOCAL_KEY = "data.local_crop_size"


def grid_stride(model: ModelConfig) -> int | None:
    """Pixels per mask-grid cell (a ViT's patch size, a Swin's final-stage stride), or None
    when the model fields are themselves invalid (validation then names the problem)."""
    from mimkit.models.spec import backbone_spec  # torch loads only when a command runs

    try:
        return backbone_spec(model.arch, model.img_size, model.patch_size).stage_strides[-1]
    except ConfigError:
        return None


def derived_local_crop_size(local: int, img: int, new_img: int, stride: int) -> int:
    """The multiple of ``stride`` closest to ``local / img`` of ``new_img`` (ties round up),
    at least ``stride``."""
    cells = int(local / img * new_img / stride + 0.5)
    return max(1, cells) * stride


def derive_grid_fields(base: PretrainConfig, cfg: PretrainConfig, set_keys: set[str]) -> None:
    """Derive ``cfg``'s local crop size again when the overrides changed the grid but did not
    set it. ``base`` is the config before the overrides."""
    if LOCAL_KEY in set_keys or not set_keys & set(GRID_KEYS):
        return
    stride = grid_stride(cfg.model)
    if stride is None or base.model.img_size < 1:
        return
    cfg.data.local_crop_size = derived_local_crop_size(
        base.data.local_crop_size, base.model.img_size, cfg.model.img_size, stride
    )


def sizes_that_work(local: int, img: int, stride: int) -> str:
    """The local crop sizes next to ``local`` that fit a grid of ``stride`` px cells, for an
    error message."""
    below, above = local // stride * stride, (local // stride + 1) * stride
    near = [s for s in (below, above) if 0 < s <= img]
    options = " or ".join(str(s) for s in near) if near else str(stride)
    return f"multiples of {stride} such as {options}"
