"""Backbone weights in and out: checkpoint loading (mimkit, DINO/iBOT, timm, safetensors)
and the safetensors export that timm loads strictly."""

from mimkit.weights.export import export_backbone, timm_constructor
from mimkit.weights.io import (
    HEADS_BY_DIM,
    ModelSource,
    infer_vit_config,
    load_backbone,
    load_backbone_state,
    load_pretrained,
    load_source,
    resolve_spec,
    training_config,
)

__all__ = [
    "HEADS_BY_DIM",
    "ModelSource",
    "export_backbone",
    "infer_vit_config",
    "load_backbone",
    "load_backbone_state",
    "load_pretrained",
    "load_source",
    "resolve_spec",
    "timm_constructor",
    "training_config",
]
