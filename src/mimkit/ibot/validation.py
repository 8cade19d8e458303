"""Checks of a pretraining config that can fail on user input, before any data is read or
any file is written. They need only the backbone's description (``models/spec.py``), never a
built model."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from mimkit.data import augment_whole_batches, validate_data_spec
from mimkit.errors import ConfigError
from mimkit.ibot.config import PretrainConfig, sizes_that_work
from mimkit.ibot.mask_planner import contrastive_score
from mimkit.masking import (
    MaskStrategy,
    check_supported,
    parse_strategies,
)
from mimkit.masking.select import floor_count
from mimkit.models import backbone_spec
from mimkit.train.compile import check_compile_backend


def validate_config(cfg: PretrainConfig) -> None:
    """Every check that can fail on user input, before any data is read or file written."""
    cfg.check_fields()  # every number finite and in range, every choice known, first
    cfg.loss.adv_lambda_ramp()
    m, d = cfg.model, cfg.data
    backbone = backbone_spec(m.arch, m.img_size, m.patch_size)  # raises on bad arch/sizes
    stride = backbone.stage_strides[-1]  # a ViT's patch size, a Swin's final-stage stride
    if d.local_crops and d.local_crop_size % stride:
        what = "patch size" if stride == m.patch_size else "final-stage stride"
        raise ConfigError(
            f"local crop size {d.local_crop_size} is not divisible by {what} {stride}; "
            f"sizes that work: {sizes_that_work(d.local_crop_size, m.img_size, stride)} "
            f"(--set data.local_crop_size=N)"
        )
    for name, (lo, hi) in (("global_scale", d.global_scale), ("local_scale", d.local_scale)):
        if lo > hi:
            raise ConfigError(f"data.{name} must satisfy min <= max, got {lo}, {hi}")
    if cfg.loss.koleo > 0 and cfg.optim.batch_size < 2:
        raise ConfigError("the KoLeo term (loss.koleo > 0) needs a batch of at least 2 images")
    check_compile_backend(cfg.run.compile)
    if cfg.loss.lambda3 > 0 and d.global_crops < 2:
        raise ConfigError("the contrastive term (lambda3 > 0) needs at least 2 global crops")
    if cfg.loss.lambda3 > 0 and not 1 <= cfg.loss.contrastive_k <= backbone.num_patches // 2:
        raise ConfigError(
            f"loss.contrastive_k must be between 1 and {backbone.num_patches // 2} "
            f"(half the {backbone.num_patches} patches)"
        )
    strategies = parse_strategies(cfg.masking.strategies, d.global_crops, backbone.depth)
    scores = [s.score for s in strategies]
    scores.append(contrastive_score(cfg, strategies, backbone.depth))
    check_supported(scores, backbone.readouts, m.arch)
    k = cfg.masking.validate()
    if m.pos_interpolation != "size" and backbone.family != "vit":
        raise ConfigError(
            f"model.pos_interpolation {m.pos_interpolation!r} applies to mimkit's ViT only, "
            f"not to {m.arch}"
        )
    w = cfg.loss.warmup_teacher_temp_epochs
    if cfg.loss.teacher_temp_warmup == "epoch" and not float(w).is_integer():
        raise ConfigError(
            f"loss.warmup_teacher_temp_epochs must be a whole number with per-epoch warm-up, "
            f"got {w}"
        )
    for message in hint_warnings(strategies, k.ratio, k.show_max, backbone.grid_size()):
        warnings.warn(message, stacklevel=2)
    validate_data_spec(d.dataset, "train")
    augment_whole_batches(d.batch_augment, d.dataset)  # true on an image folder: refused
    if cfg.run.init and not Path(cfg.run.init).is_file():
        raise ConfigError(f"--init weights {cfg.run.init} do not exist")


def hint_warnings(
    strategies: list[MaskStrategy], ratio: tuple[float, float], show_max: float, grid: int
) -> list[str]:
    """A message for each hint strategy that reveals no patch on a ``grid x grid`` grid at
    any ratio of the range: ``floor(show_max * r * N)`` is 0 up to r = hi (AttMask's count
    too, e.g. show_max 0.1 on 16 patches)."""
    n, hi = grid * grid, float(ratio[1])
    hints = sorted({s.text for s in strategies if s.mode == "hint"})
    if not hints or floor_count(torch.tensor([show_max * hi]), n).item() > 0:
        return []
    needed = f"masking.show_max >= {1 / (hi * n):.3g}" if hi > 0 else "a ratio above 0"
    return [
        f"mask strategy {text!r} reveals nothing: floor(show_max {show_max} x r <= {hi} x "
        f"{n} patches) = 0 on a {grid}x{grid} grid, so it masks as 'high'; {needed} "
        "reveals at least one patch"
        for text in hints
    ]

