"""Checks of a pretraining config that can fail on user input, before any data is read or
any file is written."""

from __future__ import annotations

import math
from pathlib import Path

from mimkit.config import PretrainConfig
from mimkit.data import validate_data_spec
from mimkit.errors import ConfigError
from mimkit.masking import MaskConfig, parse_score, parse_strategies
from mimkit.models import build_vit


def validate_config(cfg: PretrainConfig) -> None:
    """Every check that can fail on user input, before any data is read or file written."""
    m, d, o = cfg.model, cfg.data, cfg.optim
    backbone = build_vit(m.arch, m.img_size, m.patch_size)  # raises on bad arch/sizes
    if d.global_crops < 1:
        raise ConfigError("data.global_crops must be at least 1")
    if d.local_crops < 0:
        raise ConfigError("data.local_crops must be 0 or more")
    if d.local_crops and d.local_crop_size % m.patch_size:
        raise ConfigError(
            f"local crop size {d.local_crop_size} is not divisible by patch size {m.patch_size}"
        )
    for name, (lo, hi) in (("global_scale", d.global_scale), ("local_scale", d.local_scale)):
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"data.{name} must satisfy 0 < min <= max <= 1, got {lo}, {hi}")
    probs = (d.flip_prob, d.jitter_prob, d.grayscale_prob, d.solarize_prob, *d.blur_prob)
    if not all(0 <= p <= 1 for p in probs):
        raise ConfigError("data augmentation probabilities must lie in [0, 1]")
    if not 0 <= d.jitter_strength <= 5:
        raise ConfigError(f"data.jitter_strength must lie in [0, 5], got {d.jitter_strength}")
    if o.epochs < 1 or o.batch_size < 1:
        raise ConfigError("optim.epochs and optim.batch_size must be at least 1")
    if d.on_bad_image not in ("skip", "error"):
        raise ConfigError("data.on_bad_image must be 'skip' or 'error'")
    if cfg.run.amp not in ("auto", "bf16", "fp16", "none"):
        raise ConfigError("run.amp must be auto, bf16, fp16 or none")
    if not (cfg.masking.start_epoch >= 0 and math.isfinite(cfg.masking.start_epoch)):
        raise ConfigError(f"masking.start_epoch must be 0 or more, got {cfg.masking.start_epoch}")
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
