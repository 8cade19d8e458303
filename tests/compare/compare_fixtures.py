"""Shared by the compare tests: a tiny compare config."""

from __future__ import annotations

from typing import Any

# A vit_nano on 40 embedded images, 5 steps per epoch (cf. tests/train/conftest.py).
TINY_OVERRIDES: dict[str, Any] = {
    "model.arch": "vit_nano",
    "model.img_size": 16,
    "model.patch_size": 4,
    "model.out_dim": 64,
    "model.patch_out_dim": 64,
    "model.head_hidden_dim": 64,
    "model.head_bottleneck_dim": 32,
    "data.subset": 4,
    "data.local_crops": 0,
    "data.num_workers": 0,
    "masking.mask_prob": 1.0,
    "optim.batch_size": 8,
    "optim.warmup_epochs": 1.0,
    "optim.momentum_teacher": 0.5,
    "run.progress": False,
    "run.tensorboard": False,
    "run.device": "cpu",
    "run.threads": 1,
}


def tiny_compare(**changes: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "base": "fashion_mnist_vit_mini",
        "overrides": dict(TINY_OVERRIDES),
        "seeds": [0, 1],
        "epochs": 2,
        "eval": {"knn": {"every": 1, "ks": [5, 10]}, "linear": {"epochs": 3}},
        "strategies": [
            {"name": "Random", "mask": ["random"]},
            {"name": "AttMask-High", "mask": ["high@raw:-1"]},
        ],
    }
    cfg.update(changes)
    return cfg
