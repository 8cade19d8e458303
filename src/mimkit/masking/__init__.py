"""Masks for masked-image-model pretraining: random, block and attention-guided (SPEC section 2).

Pure functions on tensors, vectorised over the batch, on any device, with an optional
``torch.Generator`` for reproducibility.
"""

from mimkit.masking.generator import MaskConfig, MaskGenerator
from mimkit.masking.plan import MaskPlan
from mimkit.masking.random_block import block_mask, random_mask
from mimkit.masking.scores import cls_attention_scores, minmax_normalize, rollout_scores
from mimkit.masking.select import select_mask
from mimkit.masking.strategy import (
    MaskStrategy,
    ScoreSpec,
    parse_score,
    parse_strategies,
    parse_strategy,
)

__all__ = [
    "MaskConfig",
    "MaskGenerator",
    "MaskPlan",
    "MaskStrategy",
    "ScoreSpec",
    "block_mask",
    "cls_attention_scores",
    "minmax_normalize",
    "parse_score",
    "parse_strategies",
    "parse_strategy",
    "random_mask",
    "rollout_scores",
    "select_mask",
]
