"""Backbones (behind one contract, ``backbone.py``), their descriptions and the iBOT head."""

from mimkit.models.backbone import CLS_ROWS, ROLLOUT, Backbone, Features, resolve_layer
from mimkit.models.families import backbone_spec, build_backbone, build_vit
from mimkit.models.readout import Readout, ReadoutRequest, rollout_accumulate, rollout_matrix
from mimkit.models.spec import PRESETS, BackboneSpec
from mimkit.models.vit import VisionTransformer

__all__ = [
    "CLS_ROWS",
    "PRESETS",
    "ROLLOUT",
    "Backbone",
    "BackboneSpec",
    "Features",
    "Readout",
    "ReadoutRequest",
    "VisionTransformer",
    "backbone_spec",
    "build_backbone",
    "build_vit",
    "resolve_layer",
    "rollout_accumulate",
    "rollout_matrix",
]
