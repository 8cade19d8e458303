"""Pretraining configuration: iBOT's sections, loaded from YAML, overridable field by field.

A config file holds any subset of the sections below; missing fields keep their defaults.
Overrides use dotted paths (``optim.lr=1e-3``) and are parsed as YAML scalars or lists. Each
field declares its range or choices next to its default (see :mod:`mimkit.config`).

Fields that must fit the patch grid are derived again when the overrides change the grid: a
config file's local crop size fits its own image and patch size (14 px local crops for 28 px
images with 7 px patches); when the user changes the image size, the patch size or the
backbone and does not set the local crop size, it becomes the multiple of the backbone's
stride closest to the file's ratio of local to global size, at least one patch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from mimkit.config import RunConfig, SectionedConfig, choice, load_sections, ranged, set_field
from mimkit.data.image_folder import BAD_IMAGE_MODES
from mimkit.errors import ConfigError
from mimkit.ibot.schedules import TEMP_WARMUPS
from mimkit.losses.loss_prediction import PRED_GRADS
from mimkit.losses.mask_policy import ADV_ESTIMATORS
from mimkit.masking.config import MaskingConfig
from mimkit.masking.curriculum import RAMP_SHAPES, Ramp
from mimkit.models.vit import POS_INTERPOLATIONS
from mimkit.train.optim import CLIP_MODES
from mimkit.train.schedules import LR_WARMUPS


@dataclass
class ModelConfig:
    arch: str = "vit_mini"
    img_size: int = ranged(32, ">= 1")
    patch_size: int = ranged(4, ">= 1")
    drop_path_rate: float = ranged(0.1, "[0, 1)")
    out_dim: int = ranged(1024, ">= 1")  # CLS prototypes
    patch_out_dim: int = ranged(1024, ">= 1")  # patch prototypes
    head_hidden_dim: int = ranged(1024, ">= 1")
    head_bottleneck_dim: int = ranged(256, ">= 1")
    head_layers: int = ranged(3, ">= 1")
    shared_head: bool = True  # patch head shares the CLS head's last layer (iBOT default)
    norm_last_layer: bool = True
    # Position embeddings of smaller crops: "size" (exact resize) or "dino" (DINO / iBOT's).
    pos_interpolation: str = choice("size", POS_INTERPOLATIONS)


@dataclass
class DataConfig:
    dataset: str = "embedded"
    subset: float | int | None = ranged(None, "> 0")  # fraction (<1) or count (>=1) per class
    val_dataset: str | None = None  # defaults to the "val" split of `dataset`
    num_workers: int = ranged(2, ">= 0")
    global_crops: int = ranged(2, ">= 1")
    local_crops: int = ranged(2, ">= 0")
    local_crop_size: int = ranged(16, ">= 1")
    global_scale: tuple[float, float] = ranged((0.25, 1.0), "(0, 1]")
    local_scale: tuple[float, float] = ranged((0.05, 0.25), "(0, 1]")
    on_bad_image: str = choice("skip", BAD_IMAGE_MODES)
    # Augmentations (DINO's by default): see mimkit.data.Augmentations.
    flip_prob: float = ranged(0.5, "[0, 1]")
    jitter_prob: float = ranged(0.8, "[0, 1]")
    jitter_strength: float = ranged(1.0, "[0, 5]")
    grayscale_prob: float = ranged(0.2, "[0, 1]")
    blur_prob: tuple[float, float, float] = ranged((1.0, 0.1, 0.5), "[0, 1]")
    solarize_prob: float = ranged(0.2, "[0, 1]")
    blur_sigma_scaled: bool = True  # sigma scales with the crop; false: 0.1-2 px on all (DINO)
    # Augment whole batches with tensor operations (mimkit.data.batch_transforms) rather than
    # image by image with PIL in the loader workers. auto: whole batches where the data set
    # is an array of images of one size (embedded, IDX, CIFAR, STL-10), per image elsewhere;
    # true: whole batches or an error; false: per image.
    batch_augment: bool | Literal["auto"] = "auto"


@dataclass
class LossConfig:
    lambda1: float = ranged(1.0, ">= 0")  # CLS term
    lambda2: float = ranged(1.0, ">= 0")  # patch (MIM) term
    lambda3: float = ranged(0.0, ">= 0")  # dense contrastive term (0 disables it)
    koleo: float = ranged(0.0, ">= 0")  # KoLeo on the student's global CLS tokens (DINOv2)
    student_temp: float = ranged(0.1, "> 0")
    teacher_temp: float = ranged(0.07, "> 0")
    warmup_teacher_temp: float = ranged(0.04, "> 0")
    teacher_patch_temp: float = ranged(0.07, "> 0")
    warmup_teacher_patch_temp: float = ranged(0.04, "> 0")
    warmup_teacher_temp_epochs: float = ranged(1.0, ">= 0")
    # step: per step; epoch: per epoch, linspace (iBOT)
    teacher_temp_warmup: str = choice("step", TEMP_WARMUPS)
    center_momentum: float = ranged(0.9, "[0, 1]")
    contrastive_k: int = ranged(4, ">= 1")
    contrastive_tau: float = ranged(0.2, "> 0")
    # default: each crop's own mask score (raw:-1 for random/block)
    contrastive_score: str | None = None
    # Learned mask scores (docs/method.md, "Learned scores"); used only when a strategy reads them.
    pred_weight: float = ranged(1.0, ">= 0")  # HPM's relative loss-prediction term (``pred``)
    # backbone: the term trains the tokens too (HPM); head: only the predictor
    pred_grad: str = choice("backbone", PRED_GRADS)
    adv_lambda: tuple[float, float] = ranged((1.0, 1.0), "[-1, 1]")  # -1 partner, +1 adversary
    adv_lambda_schedule: str = choice("constant", RAMP_SHAPES)  # over training
    adv_entropy: float = ranged(0.01, ">= 0")  # entropy bonus of the policy, against collapse
    # reinforce, or straight_through (it did not train an adversary here: docs/method.md)
    adv_estimator: str = choice("reinforce", ADV_ESTIMATORS)

    def adv_lambda_ramp(self) -> Ramp:
        """The adversarial policy's lambda over training (ConfigError naming a bad value)."""
        lo, hi = (float(x) for x in self.adv_lambda)
        return Ramp(lo, hi, self.adv_lambda_schedule).check("loss.adv_lambda", -1.0, 1.0)


@dataclass
class OptimConfig:
    epochs: int = ranged(20, ">= 1")
    batch_size: int = ranged(64, ">= 1")  # per process
    lr: float = ranged(5e-4, "> 0")  # at a total batch of 256; scaled linearly
    min_lr: float = ranged(1e-6, ">= 0")
    warmup_epochs: float = ranged(2.0, ">= 0")
    weight_decay: float = ranged(0.04, ">= 0")
    weight_decay_end: float = ranged(0.4, ">= 0")
    clip_grad: float = ranged(3.0, ">= 0")  # 0 turns clipping off
    clip_mode: str = choice("global", CLIP_MODES)  # global: joint norm; param: each (iBOT)
    decay_tokens: bool = False  # weight-decay cls_token, pos_embed, masked_embed (iBOT: true)
    # linear: peak at step W; linspace: np.linspace(0, lr, W) (iBOT)
    lr_warmup: str = choice("linear", LR_WARMUPS)
    freeze_last_layer: float = ranged(1.0, ">= 0")
    momentum_teacher: float = ranged(0.996, "[0, 1]")


@dataclass
class PretrainRunConfig(RunConfig):
    output_dir: str = "runs/pretrain"
    knn_every_epochs: int = ranged(0, ">= 0")  # online k-NN every N epochs (0: at the end)
    # mask diagnostics (docs/method.md) every N epochs; 0: off
    diagnostics_every_epochs: int = ranged(0, ">= 0")
    final_knn: bool = True


@dataclass
class PretrainConfig(SectionedConfig):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: PretrainRunConfig = field(default_factory=PretrainRunConfig)


def load_config(name_or_path: str | None, overrides: list[tuple[str, Any]] = ()) -> PretrainConfig:
    """A pretraining config; fields that must fit the patch grid and that the overrides
    changed the grid of without setting them are derived again (see the module's text)."""
    base = load_sections(PretrainConfig, name_or_path)
    cfg = copy.deepcopy(base)
    for key, value in overrides:
        set_field(cfg, key, value)
    derive_grid_fields(base, cfg, {key for key, _ in overrides})
    return cfg


# -- fields derived from the patch grid -----------------------------------------------------
GRID_KEYS = ("model.img_size", "model.patch_size", "model.arch")
LOCAL_KEY = "data.local_crop_size"


def grid_stride(model: ModelConfig) -> int | None:
    """Pixels per mask-grid cell (a ViT's patch size, a Swin's final-stage stride), or None
    when the model fields are themselves invalid (validation then names the problem)."""
    from mimkit.models import backbone_spec  # torch loads only when a command runs

    try:
        return backbone_spec(model.arch, model.img_size, model.patch_size).stage_strides[-1]
    except ConfigError:
        return None


def derived_local_crop_size(local: int, img: int, new_img: int, stride: int) -> int:
    """The multiple of ``stride`` closest to ``local / img`` of ``new_img`` (ties round up),
    at least ``stride``."""
    cells = int(local / img * new_img / stride + 0.5)
    return max(1, cells) * stride


def derive_grid_fields(base: PretrainConfig, cfg: PretrainConfig, set_keys: set[str]) -> None:
    """Derive ``cfg``'s local crop size again when the overrides changed the grid but did not
    set it. ``base`` is the config before the overrides."""
    if LOCAL_KEY in set_keys or not set_keys & set(GRID_KEYS):
        return
    stride = grid_stride(cfg.model)
    if stride is None or base.model.img_size < 1:
        return
    cfg.data.local_crop_size = derived_local_crop_size(
        base.data.local_crop_size, base.model.img_size, cfg.model.img_size, stride
    )


def sizes_that_work(local: int, img: int, stride: int) -> str:
    """The local crop sizes next to ``local`` that fit a grid of ``stride`` px cells, for an
    error message."""
    below, above = local // stride * stride, (local // stride + 1) * stride
    near = [s for s in (below, above) if 0 < s <= img]
    options = " or ".join(str(s) for s in near) if near else str(stride)
    return f"multiples of {stride} such as {options}"
