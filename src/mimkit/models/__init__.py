"""Backbones and heads."""

from mimkit.models.presets import PRESETS, build_vit
from mimkit.models.readout import Readout, ReadoutRequest, rollout_accumulate, rollout_matrix
from mimkit.models.vit import VisionTransformer

__all__ = [
    "PRESETS",
    "Readout",
    "ReadoutRequest",
    "VisionTransformer",
    "build_vit",
    "rollout_accumulate",
    "rollout_matrix",
]
