"""AdamW with weight decay only on weight matrices (not biases, norms or tokens)."""

from __future__ import annotations

import torch
from torch import nn

NO_DECAY_NAMES = ("cls_token", "pos_embed", "masked_embed")


def applies_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Weight decay goes on weight matrices only: not on biases, norms or tokens."""
    return not (
        param.ndim <= 1 or name.endswith(".bias") or any(n in name for n in NO_DECAY_NAMES)
    )


def param_groups(model: nn.Module) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if applies_weight_decay(name, p) else no_decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}]


def build_optimizer(model: nn.Module) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model), lr=0.0, weight_decay=0.0)


def set_hyperparameters(optimizer: torch.optim.Optimizer, lr: float, wd: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = wd if group["apply_wd"] else 0.0
