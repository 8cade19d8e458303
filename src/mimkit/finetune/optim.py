"""AdamW parameter groups for fine-tuning: layer-wise learning-rate decay (BEiT's scheme,
used by iBOT) and weight decay on weight matrices only.

Layer ids of a backbone of depth ``d`` (its :meth:`~mimkit.models.Backbone.layer_id`): 0 for
the embeddings (patch embedding, CLS token, position embedding), ``i + 1`` for the ``i``-th
block to run (a Swin's counted across stages), ``d + 1`` for everything after the blocks (final
norm, classifier). A parameter of layer ``l`` learns at ``lr x layer_decay ** (d + 1 - l)``:
the classifier at the full rate, each block below it ``layer_decay`` times slower.
"""

from __future__ import annotations

from mimkit.finetune.model import Classifier
from mimkit.models import Backbone
from mimkit.train.optim import applies_weight_decay

BACKBONE = "backbone."  # the classifier's backbone; everything else is after the blocks


def layer_id(name: str, backbone: Backbone) -> int:
    """The layer of a parameter named as in the classifier (``backbone.blocks.3.mlp...``)."""
    if name.startswith(BACKBONE):
        return backbone.layer_id(name.removeprefix(BACKBONE))
    return backbone.depth + 1


def layer_decay_groups(model: Classifier, layer_decay: float) -> list[dict]:
    """One AdamW group per (layer, decayed or not), each with its ``lr_scale`` and whether
    the schedule's weight decay applies (``apply_wd``); frozen parameters are left out.
    Groups carry their ``param_names``."""
    backbone = model.backbone
    depth = backbone.depth
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid, decay = layer_id(name, backbone), applies_weight_decay(name, p)
        group = groups.setdefault(
            (lid, decay),
            {
                "params": [],
                "param_names": [],
                "layer": lid,
                "lr_scale": layer_decay ** (depth + 1 - lid),
                "apply_wd": decay,
            },
        )
        group["params"].append(p)
        group["param_names"].append(name)
    return [groups[key] for key in sorted(groups)]
