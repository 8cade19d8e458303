from __future__ import annotations

from pathlib import Path

import pytest

from mimkit.ibot.config import PretrainConfig, load_config


def tiny_config(out: Path, **fields: object) -> PretrainConfig:
    """A vit_nano run on 40 embedded images: 5 steps per epoch, seconds on a CPU."""
    overrides = {
        "model.arch": "vit_nano",
        "model.img_size": 16,
        "model.patch_size": 4,
        "model.out_dim": 64,
        "model.patch_out_dim": 64,
        "model.head_hidden_dim": 64,
        "model.head_bottleneck_dim": 32,
        "data.subset": 4,
        "data.local_crops": 1,
        "data.local_crop_size": 8,
        "data.num_workers": 0,
        "masking.mask_prob": 1.0,
        "optim.batch_size": 8,
        "optim.epochs": 2,
        "optim.warmup_epochs": 1.0,
        "run.output_dir": str(out),
        "run.log_every_steps": 1,
        "run.progress": False,
        "run.tensorboard": False,
        "run.device": "cpu",
        "run.final_knn": False,
        "run.threads": 1,
    }
    overrides.update(fields)
    return load_config(None, list(overrides.items()))


@pytest.fixture
def make_config(tmp_path: Path):
    def make(name: str = "run", **fields: object) -> PretrainConfig:
        return tiny_config(tmp_path / name, **fields)

    return make
