"""AdamW parameter groups for fine-tuning: layer-wise learning-rate decay (BEiT's scheme,
used by iBOT) and weight decay on weight matrices only.

Layer ids of a ViT of depth ``d``: 0 for the embeddings (patch embedding, CLS token, position
embedding), ``i + 1`` for block ``i``, ``d + 1`` for everything after the blocks (final norm,
classifier). A parameter of layer ``l`` learns at ``lr x layer_decay ** (d + 1 - l)``: the
classifier at the full rate, each block below it ``layer_decay`` times slower.
"""

from __future__ import annotations

import re

from torch import nn

from mimkit.train.optim import applies_weight_decay

EMBEDDING_NAMES = ("patch_embed", "cls_token", "pos_embed", "masked_embed")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def layer_id(name: str, depth: int) -> int:
    """The layer of a parameter named as in the classifier (``backbone.blocks.3.mlp...``)."""
    block = _BLOCK.search(name)
    if block:
        return int(block.group(1)) + 1
    base = name.removeprefix("backbone.").split(".")[0]
    return 0 if base in EMBEDDING_NAMES else depth + 1


def layer_decay_groups(
    model: nn.Module, depth: int, weight_decay: float, layer_decay: float
) -> list[dict]:
    """One AdamW group per (layer, decayed or not), each with its ``lr_scale`` and its
    weight decay; frozen parameters are left out. Groups carry their ``param_names``."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid, decay = layer_id(name, depth), applies_weight_decay(name, p)
        group = groups.setdefault(
            (lid, decay),
            {
                "params": [],
                "param_names": [],
                "layer": lid,
                "lr_scale": layer_decay ** (depth + 1 - lid),
                "weight_decay": weight_decay if decay else 0.0,
            },
        )
        group["params"].append(p)
        group["param_names"].append(name)
    return [groups[key] for key in sorted(groups)]


def set_learning_rate(optimizer, lr: float) -> None:
    """The schedule's rate, scaled per group by its layer's ``lr_scale``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
