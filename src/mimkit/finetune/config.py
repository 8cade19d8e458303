"""Fine-tuning configuration: typed sections read from YAML and overridden field by field
(``--set optim.lr=1e-3``), exactly like pretraining's (see :mod:`mimkit.config`).

Shipped configs live in ``mimkit/configs/finetune/``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from mimkit.config import SectionedConfig, load_sections
from mimkit.data.datasets import check_subset
from mimkit.errors import ConfigError
from mimkit.models import backbone_spec

SHIPPED_FOLDER = "finetune"
RANDOM_INIT = "random"
AMP_MODES = ("auto", "bf16", "fp16", "none")


@dataclass
class FinetuneModelConfig:
    # The backbone's shape comes from the --init checkpoint. These fields override it (an
    # image size other than the checkpoint's resizes its position embedding, bicubic) and
    # are what --init random builds.
    arch: str | None = None
    img_size: int | None = None
    patch_size: int | None = None
    drop_path_rate: float = 0.1
    head_init_scale: float = 0.001  # the classifier starts near zero (BEiT's init_scale)


@dataclass
class FinetuneDataConfig:
    dataset: str = "embedded"
    val_dataset: str | None = None  # defaults to the "val" split of `dataset`
    subset: float | None = None  # labels kept per class: a fraction (0.01 = 1%) or a count
    val_subset: float | None = None  # evaluate on part of the val split (tests, smoke runs)
    num_workers: int = 2
    on_bad_image: str = "skip"
    # Augment whole batches with tensor operations (mimkit.data.batch_finetune) rather than
    # image by image with PIL. None: whole batches for array data sets (embedded, IDX, CIFAR),
    # image by image for folders of files; true insists (an error for a folder).
    batch_augment: bool | None = None


@dataclass
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range
    flip_prob: float = 0.5
    randaug_ops: int = 2  # RandAugment operations per image (0: off)
    randaug_magnitude: int = 9  # on timm's 0-10 scale ("rand-m9")
    erase_prob: float = 0.25  # random erasing (0: off)
    mixup: float = 0.8  # Mixup's Beta alpha (0: off)
    cutmix: float = 1.0  # CutMix's Beta alpha (0: off)
    mix_prob: float = 1.0  # probability that a batch is mixed at all
    switch_prob: float = 0.5  # probability of CutMix rather than Mixup when both are on
    label_smoothing: float = 0.1

    @property
    def mixing(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


@dataclass
class FinetuneOptimConfig:
    epochs: int = 100
    batch_size: int = 128  # per process
    lr: float = 1e-3  # peak, at a total batch of 256; scaled linearly
    min_lr: float = 1e-6
    warmup_epochs: float = 20.0
    weight_decay: float = 0.05  # weight matrices only, not biases/norms/tokens
    layer_decay: float = 0.65  # block i of depth d learns at lr x layer_decay^(d - i)
    clip_grad: float = 0.0  # 0: no clipping
    # Exponential moving average of the weights, its decay per step (0: off); when on, the
    # evaluations (and the last/best figures) are of the average.
    ema: float = 0.0


@dataclass
class FinetuneRunConfig:
    init: str | None = None  # backbone weights (any file mimkit knn reads) or "random"
    init_key: str = "teacher"  # which network of a two-network checkpoint to start from
    output_dir: str | None = None  # default: next to the --init file (see default_output_dir)
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # auto: bf16 on CUDA, none on CPU; or bf16, fp16, none
    max_steps: int | None = None
    save_every_steps: int | None = None
    log_every_steps: int = 10
    tensorboard: bool = True
    progress: bool = True
    threads: int | None = None
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
        _check_model(self.model, self.run.init)
        _check_augment(self.augment, self.optim.batch_size)
        _check_optim(self.optim)
        _check_run(self.run)
        d = self.data
        for name in ("subset", "val_subset"):
            value = getattr(d, name)
            if isinstance(value, str):
                raise ConfigError(f"data.{name} {value!r} must be a fraction or a count")
            check_subset(value)
        if d.num_workers < 0:
            raise ConfigError(f"data.num_workers must be 0 or more, got {d.num_workers}")
        if d.on_bad_image not in ("skip", "error"):
            raise ConfigError("data.on_bad_image must be 'skip' or 'error'")
        if d.batch_augment not in (None, True, False):
            raise ConfigError(
                f"data.batch_augment must be true, false or null (automatic), "
                f"got {d.batch_augment!r}"
            )


def _positive_int_or_none(value: Any, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")


def _check_model(m: FinetuneModelConfig, init: str | None) -> None:
    _positive_int_or_none(m.img_size, "model.img_size")
    _positive_int_or_none(m.patch_size, "model.patch_size")
    if m.arch is not None:  # a preset or timm:NAME, at these sizes (the shape is not built)
        backbone_spec(m.arch, m.img_size, m.patch_size)
    elif m.img_size and m.patch_size and m.img_size % m.patch_size:
        raise ConfigError(f"image size {m.img_size} is not divisible by patch size {m.patch_size}")
    if init == RANDOM_INIT and m.arch is None:
        raise ConfigError(
            "--init random needs the model's shape: --arch (and --img-size/--patch-size "
            "unless the preset's)"
        )
    if not 0 <= m.drop_path_rate < 1:
        raise ConfigError(f"model.drop_path_rate must lie in [0, 1), got {m.drop_path_rate}")
    if not m.head_init_scale > 0:
        raise ConfigError(f"model.head_init_scale must be > 0, got {m.head_init_scale}")


def _check_augment(a: AugmentConfig, batch_size: int) -> None:
    lo, hi = a.crop_scale
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"augment.crop_scale must satisfy 0 < min <= max <= 1, got {lo}, {hi}")
    for name in ("flip_prob", "erase_prob", "mix_prob", "switch_prob"):
        if not 0 <= getattr(a, name) <= 1:
            raise ConfigError(f"augment.{name} must lie in [0, 1], got {getattr(a, name)}")
    if a.randaug_ops < 0:
        raise ConfigError(f"augment.randaug_ops must be 0 or more, got {a.randaug_ops}")
    if not 0 <= a.randaug_magnitude <= 10:
        raise ConfigError(
            f"augment.randaug_magnitude must lie in 0..10 (timm's scale), got {a.randaug_magnitude}"
        )
    if a.mixup < 0 or a.cutmix < 0:
        raise ConfigError("augment.mixup and augment.cutmix must be 0 (off) or more")
    if not 0 <= a.label_smoothing < 1:
        raise ConfigError(f"augment.label_smoothing must lie in [0, 1), got {a.label_smoothing}")
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


def _check_optim(o: FinetuneOptimConfig) -> None:
    if o.epochs < 1 or o.batch_size < 1:
        raise ConfigError("optim.epochs and optim.batch_size must be at least 1")
    if not o.lr > 0 or o.min_lr < 0:
        raise ConfigError(f"optim.lr must be > 0 and optim.min_lr >= 0, got {o.lr}, {o.min_lr}")
    if not 0 <= o.warmup_epochs <= o.epochs:
        raise ConfigError(
            f"optim.warmup_epochs must lie in [0, epochs = {o.epochs}], got {o.warmup_epochs}"
        )
    if o.weight_decay < 0 or o.clip_grad < 0:
        raise ConfigError("optim.weight_decay and optim.clip_grad must be 0 or more")
    if not 0 < o.layer_decay <= 1:
        raise ConfigError(f"optim.layer_decay must lie in (0, 1], got {o.layer_decay}")
    if not 0 <= o.ema < 1:
        raise ConfigError(f"optim.ema must lie in [0, 1) (0: off), got {o.ema}")


def _check_run(r: FinetuneRunConfig) -> None:
    if not r.init:
        raise ConfigError(
            "no backbone to fine-tune: give --init CHECKPOINT (any file mimkit knn reads) "
            "or --init random"
        )
    if r.amp not in AMP_MODES:
        raise ConfigError(f"run.amp must be one of {', '.join(AMP_MODES)}, got {r.amp!r}")
    _positive_int_or_none(r.max_steps, "run.max_steps")
    _positive_int_or_none(r.save_every_steps, "run.save_every_steps")
    _positive_int_or_none(r.threads, "run.threads")
    if r.log_every_steps < 1:
        raise ConfigError(f"run.log_every_steps must be >= 1, got {r.log_every_steps}")


def load_finetune_config(
    name_or_path: str | None, overrides: list[tuple[str, Any]] = ()
) -> FinetuneConfig:
    """A config from a YAML file or the name of a shipped fine-tuning config, then overrides."""
    return load_sections(FinetuneConfig, name_or_path, overrides, SHIPPED_FOLDER)
