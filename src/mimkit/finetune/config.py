"""Fine-tuning configuration: typed sections read from YAML and overridden field by field
(``--set optim.lr=1e-3``), exactly like pretraining's (see :mod:`mimkit.config`).

Shipped configs live in ``mimkit/configs/finetune/``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Literal

from mimkit.config import RunConfig, SectionedConfig, choice, load_sections, ranged
from mimkit.data.image_folder import BAD_IMAGE_MODES
from mimkit.data.subsets import check_subset
from mimkit.errors import ConfigError
from mimkit.models import backbone_spec
from mimkit.train.compile import check_compile_backend

SHIPPED_FOLDER = "finetune"
RANDOM_INIT = "random"


@dataclass
class FinetuneModelConfig:
    # The backbone's shape comes from the --init checkpoint. These fields override it (an
    # image size other than the checkpoint's resizes its position embedding, bicubic) and
    # are what --init random builds.
    arch: str | None = None
    img_size: int | None = ranged(None, ">= 1")
    patch_size: int | None = ranged(None, ">= 1")
    drop_path_rate: float = ranged(0.1, "[0, 1)")
    head_init_scale: float = ranged(0.001, "> 0")  # the classifier starts near zero (BEiT's)


@dataclass
class FinetuneDataConfig:
    dataset: str = "embedded"
    val_dataset: str | None = None  # defaults to the "val" split of `dataset`
    subset: float | int | None = ranged(None, "> 0")  # labels kept per class: a fraction or a count
    val_subset: float | int | None = ranged(None, "> 0")  # evaluate on part of the val split
    num_workers: int = ranged(2, ">= 0")
    on_bad_image: str = choice("skip", BAD_IMAGE_MODES)
    # Augment whole batches with tensor operations (mimkit.data.batch_finetune) rather than
    # image by image with PIL: auto (whole batches for array data sets, per image for folders
    # of files), true (whole batches or an error) or false.
    batch_augment: bool | Literal["auto"] = "auto"


@dataclass
class AugmentConfig:
    crop_scale: tuple[float, float] = ranged((0.08, 1.0), "(0, 1]")  # RandomResizedCrop area
    flip_prob: float = ranged(0.5, "[0, 1]")
    randaug_ops: int = ranged(2, ">= 0")  # RandAugment operations per image (0: off)
    randaug_magnitude: int = ranged(9, "[0, 10]")  # on timm's 0-10 scale ("rand-m9")
    erase_prob: float = ranged(0.25, "[0, 1]")  # random erasing (0: off)
    mixup: float = ranged(0.8, ">= 0")  # Mixup's Beta alpha (0: off)
    cutmix: float = ranged(1.0, ">= 0")  # CutMix's Beta alpha (0: off)
    mix_prob: float = ranged(1.0, "[0, 1]")  # probability that a batch is mixed at all
    switch_prob: float = ranged(0.5, "[0, 1]")  # CutMix rather than Mixup when both are on
    label_smoothing: float = ranged(0.1, "[0, 1)")

    @property
    def mixing(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


@dataclass
class FinetuneOptimConfig:
    epochs: int = ranged(100, ">= 1")
    batch_size: int = ranged(128, ">= 1")  # per process
    lr: float = ranged(1e-3, "> 0")  # peak, at a total batch of 256; scaled linearly
    min_lr: float = ranged(1e-6, ">= 0")
    warmup_epochs: float = ranged(20.0, ">= 0")
    weight_decay: float = ranged(0.05, ">= 0")  # weight matrices only, not biases/norms/tokens
    layer_decay: float = ranged(0.65, "(0, 1]")  # block i of depth d: lr x decay^(d - i)
    clip_grad: float = ranged(0.0, ">= 0")  # 0: no clipping
    # Exponential moving average of the weights, its decay per step (0: off); when on, the
    # evaluations (and the last/best figures) are of the average.
    ema: float = ranged(0.0, "[0, 1)")


@dataclass
class FinetuneRunConfig(RunConfig):
    init: str | None = None  # backbone weights (any file mimkit knn reads) or "random"
    output_dir: str | None = None  # default: next to the --init file (see default_output_dir)
    # At the end, the k-NN of the frozen starting backbone on the same splits (mimkit
    # finetune prints it next to the fine-tuned top-1 and records it in finetune.json).
    frozen_knn: bool = True


@dataclass
class FinetuneConfig(SectionedConfig):
    model: FinetuneModelConfig = field(default_factory=FinetuneModelConfig)
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    run: FinetuneRunConfig = field(default_factory=FinetuneRunConfig)

    def check(self) -> None:
        """Every check of the values themselves (no file is read): one ConfigError each."""
        self.check_fields()
        _check_model(self.model, self.run.init)
        _check_augment(self.augment, self.optim.batch_size)
        o = self.optim
        if not o.warmup_epochs <= o.epochs:
            raise ConfigError(
                f"optim.warmup_epochs must lie in [0, epochs = {o.epochs}], got {o.warmup_epochs}"
            )
        if not self.run.init:
            raise ConfigError(
                "no backbone to fine-tune: give --init CHECKPOINT (any file mimkit knn reads) "
                "or --init random"
            )
        check_compile_backend(self.run.compile)
        for name in ("subset", "val_subset"):
            value = getattr(self.data, name)
            if isinstance(value, str):
                raise ConfigError(f"data.{name} {value!r} must be a fraction or a count")
            check_subset(value)


def _check_model(m: FinetuneModelConfig, init: str | None) -> None:
    if m.arch is not None:  # a preset or timm:NAME, at these sizes (the shape is not built)
        backbone_spec(m.arch, m.img_size, m.patch_size)
    elif m.img_size and m.patch_size and m.img_size % m.patch_size:
        raise ConfigError(f"image size {m.img_size} is not divisible by patch size {m.patch_size}")
    if init == RANDOM_INIT and m.arch is None:
        raise ConfigError(
            "--init random needs the model's shape: --arch (and --img-size/--patch-size "
            "unless the preset's)"
        )


def _check_augment(a: AugmentConfig, batch_size: int) -> None:
    lo, hi = a.crop_scale
    if lo > hi:
        raise ConfigError(f"augment.crop_scale must satisfy min <= max, got {lo}, {hi}")
    if a.mixing:
        if batch_size % 2:
            raise ConfigError(
                f"Mixup/CutMix pair images within a batch: optim.batch_size must be even, "
                f"got {batch_size}"
            )
        if importlib.util.find_spec("timm") is None:
            raise ConfigError(
                "Mixup/CutMix use timm, which is not installed: pip install 'mimkit[timm]' "
                "(or turn them off: --mixup 0 --cutmix 0)"
            )


def load_finetune_config(
    name_or_path: str | None, overrides: list[tuple[str, Any]] = ()
) -> FinetuneConfig:
    """A config from a YAML file or the name of a shipped fine-tuning config, then overrides."""
    return load_sections(FinetuneConfig, name_or_path, overrides, SHIPPED_FOLDER)
