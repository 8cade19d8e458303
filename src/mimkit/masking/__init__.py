"""Masks for masked-image-model pretraining: random, block and attention-guided
(docs/method.md, section "Masks").

Pure functions on tensors, vectorised over the batch, on any device, with an optional
``torch.Generator`` for reproducibility.
"""

from mimkit.masking.generator import MaskGenerator
from mimkit.masking.plan import MaskPlan
from mimkit.masking.random_block import block_mask, random_mask
from mimkit.masking.scores import cls_attention_scores, minmax_normalize
from mimkit.masking.select import select_mask
from mimkit.masking.strategy import (
    MODES,
    SCORE_KINDS,
    MaskStrategy,
    ScoreSpec,
    check_supported,
    mask_crop,
    parse_score,
    parse_strategies,
    parse_strategy,
    readout_request,
)

__all__ = [
    "MODES",
    "SCORE_KINDS",
    "MaskGenerator",
    "MaskPlan",
    "MaskStrategy",
    "ScoreSpec",
    "block_mask",
    "check_supported",
    "cls_attention_scores",
    "mask_crop",
    "minmax_normalize",
    "parse_score",
    "parse_strategies",
    "parse_strategy",
    "random_mask",
    "readout_request",
    "select_mask",
]
