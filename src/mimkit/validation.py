"""Checks of a pretraining config that can fail on user input, before any data is read or
any file is written."""

from __future__ import annotations

from pathlib import Path

from mimkit.config import PretrainConfig
from mimkit.config_ranges import check_ranges
from mimkit.data import validate_data_spec
from mimkit.errors import ConfigError
from mimkit.masking import MaskConfig, parse_score, parse_strategies
from mimkit.models import build_vit


def validate_config(cfg: PretrainConfig) -> None:
    """Every check that can fail on user input, before any data is read or file written."""
    check_ranges(cfg)  # every number finite and in range, before anything uses one
    m, d = cfg.model, cfg.data
    backbone = build_vit(m.arch, m.img_size, m.patch_size)  # raises on bad arch/sizes
    if d.local_crops and d.local_crop_size % m.patch_size:
        raise ConfigError(
            f"local crop size {d.local_crop_size} is not divisible by patch size {m.patch_size}"
        )
    for name, (lo, hi) in (("global_scale", d.global_scale), ("local_scale", d.local_scale)):
        if lo > hi:
            raise ConfigError(f"data.{name} must satisfy min <= max, got {lo}, {hi}")
    if d.on_bad_image not in ("skip", "error"):
        raise ConfigError("data.on_bad_image must be 'skip' or 'error'")
    if cfg.run.amp not in ("auto", "bf16", "fp16", "none"):
        raise ConfigError("run.amp must be auto, bf16, fp16 or none")
    if cfg.loss.lambda3 > 0 and d.global_crops < 2:
        raise ConfigError("the contrastive term (lambda3 > 0) needs at least 2 global crops")
    if cfg.loss.lambda3 > 0 and not 1 <= cfg.loss.contrastive_k <= backbone.num_patches // 2:
        raise ConfigError(
            f"loss.contrastive_k must be between 1 and {backbone.num_patches // 2} "
            f"(half the {backbone.num_patches} patches)"
        )
    parse_strategies(cfg.masking.strategies, d.global_crops, backbone.depth)
    if cfg.loss.contrastive_score:
        parse_score(cfg.loss.contrastive_score, backbone.depth)
    k = cfg.masking
    MaskConfig(tuple(k.ratio), k.ratio_per, k.mask_prob, k.show_max).validate()
    validate_data_spec(d.dataset, "train")
    if cfg.run.init and not Path(cfg.run.init).is_file():
        raise ConfigError(f"--init weights {cfg.run.init} do not exist")
