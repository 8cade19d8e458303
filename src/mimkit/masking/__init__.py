"""Masks for masked-image-model pretraining: random, block, green noise, attention-guided,
mixed with chance, sampled and learned (docs/method.md, section "Masks").

Pure functions on tensors, vectorised over the batch, on any device, with an optional
``torch.Generator`` for reproducibility.
"""

from mimkit.masking.config import MaskingConfig
from mimkit.masking.curriculum import RAMP_SHAPES, Ramp
from mimkit.masking.generator import MaskGenerator
from mimkit.masking.green_noise import green_mask, green_noise
from mimkit.masking.modes import MODES, CropPlan, ModeOptions
from mimkit.masking.plan import MaskPlan
from mimkit.masking.random_block import block_mask, random_mask
from mimkit.masking.score_kinds import (
    SCORE_KINDS,
    ScoreSpec,
    check_supported,
    parse_score,
    readout_request,
)
from mimkit.masking.scores import cls_attention_scores, minmax_normalize
from mimkit.masking.select import select_mask
from mimkit.masking.strategy import MaskStrategy, mask_crop, parse_strategies, parse_strategy

__all__ = [
    "MODES",
    "RAMP_SHAPES",
    "SCORE_KINDS",
    "CropPlan",
    "MaskGenerator",
    "MaskPlan",
    "MaskingConfig",
    "MaskStrategy",
    "ModeOptions",
    "Ramp",
    "ScoreSpec",
    "block_mask",
    "check_supported",
    "cls_attention_scores",
    "green_mask",
    "green_noise",
    "mask_crop",
    "minmax_normalize",
    "parse_score",
    "parse_strategies",
    "parse_strategy",
    "random_mask",
    "readout_request",
    "select_mask",
]
