"""Helpers of the fine-tuning tests: a tiny config and a synthetic ImageFolder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mimkit.finetune import FinetuneConfig, load_finetune_config


def tiny_finetune_config(out: Path, **fields: object) -> FinetuneConfig:
    """A randomly initialised vit_nano on 40 embedded images (5 steps per epoch) and 20 val
    images: seconds on a CPU."""
    overrides = {
        "run.init": "random",
        "model.arch": "vit_nano",
        "model.img_size": 16,
        "model.patch_size": 4,
        "data.subset": 4,
        "data.val_subset": 2,
        "data.num_workers": 0,
        "augment.crop_scale": [0.5, 1.0],
        "optim.batch_size": 8,
        "optim.epochs": 2,
        "optim.warmup_epochs": 1.0,
        "run.output_dir": str(out),
        "run.log_every_steps": 1,
        "run.progress": False,
        "run.tensorboard": False,
        "run.device": "cpu",
        "run.threads": 1,
    }
    overrides.update(fields)
    return load_finetune_config(None, list(overrides.items()))


def stripes_folder(root: Path, per_class: int, val_per_class: int, size: int = 16) -> Path:
    """An ImageFolder tree (train/ and val/) of two classes that only a model that looks at
    the image can tell apart: horizontal and vertical stripes of random period, phase and
    colours, with noise. Flips, crops and RandAugment keep the orientation."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for label, name in enumerate(("horizontal", "vertical")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                period = int(rng.integers(4, 7))
                phase = int(rng.integers(0, period))
                wave = ((np.arange(size) + phase) % period) < period / 2
                mask = np.repeat(wave[:, None], size, axis=1)  # rows: horizontal stripes
                if label == 1:
                    mask = mask.T
                light, dark = rng.integers(150, 256, 3), rng.integers(0, 90, 3)
                img = np.where(mask[..., None], light, dark).astype(np.float64)
                img += rng.normal(0, 12, img.shape)
                pixels = np.clip(img, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root
