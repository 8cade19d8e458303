"""Pretraining configuration: typed dataclasses, loaded from YAML, overridable field by field.

A config file holds any subset of the sections below; missing fields keep their defaults.
Overrides use dotted paths (``optim.lr=1e-3``) and are parsed as YAML scalars or lists.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml

from mimkit.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11 on


@dataclass
class ModelConfig:
    arch: str = "vit_mini"
    img_size: int = 32
    patch_size: int = 4
    drop_path_rate: float = 0.1
    out_dim: int = 1024  # CLS prototypes
    patch_out_dim: int = 1024  # patch prototypes
    head_hidden_dim: int = 1024
    head_bottleneck_dim: int = 256
    head_layers: int = 3
    shared_head: bool = True  # patch head shares the CLS head's last layer (iBOT default)
    norm_last_layer: bool = True
    # Position embeddings of smaller crops: "size" (exact resize) or "dino" (DINO / iBOT's).
    pos_interpolation: str = "size"


@dataclass
class DataConfig:
    dataset: str = "embedded"
    subset: float | int | None = None  # fraction (<1) or count (>=1) per class, first in order
    val_dataset: str | None = None  # defaults to the "val" split of `dataset`
    num_workers: int = 2
    global_crops: int = 2
    local_crops: int = 2
    local_crop_size: int = 16
    global_scale: tuple[float, float] = (0.25, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.25)
    on_bad_image: str = "skip"
    # Augmentations (DINO's by default): see mimkit.data.Augmentations.
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    jitter_strength: float = 1.0
    grayscale_prob: float = 0.2
    blur_prob: tuple[float, float, float] = (1.0, 0.1, 0.5)
    solarize_prob: float = 0.2
    blur_sigma_scaled: bool = True  # sigma scales with the crop; false: 0.1-2 px on all (DINO)
    # Augment whole batches with tensor operations (mimkit.data.batch_transforms) rather than
    # image by image with PIL in the loader workers. auto: whole batches where the data set
    # is an array of images of one size (embedded, IDX, CIFAR, STL-10), per image elsewhere;
    # true: whole batches or an error; false: per image.
    batch_augment: bool | Literal["auto"] = "auto"


RATIO_PER = ("image", "batch", "step")
HINT_REVEALS = ("own", "independent")


@dataclass
class MaskingConfig:
    """Which patches of the global crops are masked (see ``mimkit.masking``).

    ``strategies``: one ``MODE[@SCORE]`` per global crop, or one for all. ``ratio``: r ~
    U(lo, hi) with ``0 <= lo <= hi < 1``. ``ratio_per``: ``image`` draws r for every image,
    ``batch`` once per crop and batch, ``step`` once for all crops of the batch (AttMask).
    ``mask_prob``: probability that an image is masked at all. ``show_max``: hint's top
    fraction to reveal from. ``hint_reveal``: ``own`` reveals ``floor(show_max * r * N)`` with
    the image's own r; ``independent`` draws another ratio for the count, as AttMask does
    (see :func:`mimkit.masking.select.select_mask`).
    """

    strategies: list[str] = field(default_factory=lambda: ["block"])
    ratio: tuple[float, float] = (0.1, 0.5)
    ratio_per: str = "image"  # image, batch (one per crop) or step (one for all crops: AttMask)
    mask_prob: float = 0.5
    show_max: float = 0.1
    hint_reveal: str = "own"  # own: count from the image's r; independent: another r (AttMask)
    start_epoch: float = 0.0  # no masks before this (fractional) epoch: iBOT's pred_start_epoch

    def validate(self) -> MaskingConfig:
        """ConfigError naming the first bad field (strategies are checked against a
        backbone by ``mimkit.validation``)."""
        r = self.ratio
        if isinstance(r, (int, float)) or len(r) != 2:
            raise ConfigError(f"mask ratio must be a range [lo, hi], got {r!r}")
        try:
            lo, hi = float(r[0]), float(r[1])
        except (TypeError, ValueError):
            raise ConfigError(f"mask ratio must be two numbers, got {r!r}") from None
        if not (0.0 <= lo <= hi < 1.0):
            raise ConfigError(f"mask ratio range must satisfy 0 <= lo <= hi < 1, got {r!r}")
        if self.ratio_per not in RATIO_PER:
            raise ConfigError(
                f"mask ratio_per must be one of {', '.join(RATIO_PER)}, got {self.ratio_per!r}"
            )
        if self.hint_reveal not in HINT_REVEALS:
            raise ConfigError(
                f"hint_reveal must be one of {', '.join(HINT_REVEALS)}, got {self.hint_reveal!r}"
            )
        if not (0.0 <= float(self.mask_prob) <= 1.0):
            raise ConfigError(f"mask_prob must lie in [0, 1], got {self.mask_prob!r}")
        s = float(self.show_max)
        if not (0.0 < s <= 1.0 and math.isfinite(s)):
            raise ConfigError(f"show_max must lie in (0, 1], got {self.show_max!r}")
        if not (self.start_epoch >= 0 and math.isfinite(self.start_epoch)):
            raise ConfigError(f"masking.start_epoch must be 0 or more, got {self.start_epoch}")
        return self


@dataclass
class LossConfig:
    lambda1: float = 1.0  # CLS term
    lambda2: float = 1.0  # patch (MIM) term
    lambda3: float = 0.0  # dense contrastive term (0 disables it)
    koleo: float = 0.0  # KoLeo on the student's global-crop CLS tokens (DINOv2; 0: off)
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    teacher_patch_temp: float = 0.07
    warmup_teacher_patch_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 1.0
    teacher_temp_warmup: str = "step"  # step: per step; epoch: per epoch, linspace (iBOT)
    center_momentum: float = 0.9
    contrastive_k: int = 4
    contrastive_tau: float = 0.2
    contrastive_score: str | None = (
        None  # default: each crop's own mask score (raw:-1 for random/block)
    )


@dataclass
class OptimConfig:
    epochs: int = 20
    batch_size: int = 64  # per process
    lr: float = 5e-4  # at a total batch of 256; scaled linearly
    min_lr: float = 1e-6
    warmup_epochs: float = 2.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0
    clip_mode: str = "global"  # global: joint norm; param: each parameter's own (iBOT)
    decay_tokens: bool = False  # weight-decay cls_token, pos_embed, masked_embed (iBOT: true)
    lr_warmup: str = "linear"  # linear: peak at step W; linspace: np.linspace(0, lr, W) (iBOT)
    freeze_last_layer: float = 1.0
    momentum_teacher: float = 0.996


@dataclass
class RunConfig:
    output_dir: str = "runs/pretrain"
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # auto: bf16 on CUDA, none on CPU; or bf16, fp16, none
    max_steps: int | None = None
    save_every_steps: int | None = None
    keep_every_epochs: int = 0  # also keep checkpoint_XXXX.pth every N epochs (0: never)
    knn_every_epochs: int = 0  # online k-NN on the val split every N epochs (0: only at the end)
    final_knn: bool = True
    log_every_steps: int = 10
    tensorboard: bool = True
    progress: bool = True
    threads: int | None = None
    init: str | None = None  # backbone weights to start from (mimkit, safetensors, timm, DINO/iBOT)
    init_key: str = "teacher"  # which network of a two-network checkpoint to start from
    compile: str = "none"  # torch.compile backend for the transformer blocks (inductor on GPUs)


class SectionedConfig:
    """Base of a config made of dataclass sections (``model``, ``data``, ... each a dataclass):
    a plain dict out, and back in with unknown sections or fields refused."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples) so it survives YAML and weights_only loading."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Self:
        cfg = cls()
        for section, values in (data or {}).items():
            if section not in _sections(cfg):
                raise ConfigError(f"unknown config section {section!r}")
            if not isinstance(values, dict):
                raise ConfigError(f"config section {section!r} must be a mapping")
            for key, value in values.items():
                set_field(cfg, f"{section}.{key}", value)
        return cfg


@dataclass
class PretrainConfig(SectionedConfig):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _sections(cfg: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg)]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _field_types(section: Any) -> dict[str, Any]:
    """The declared type of each field of a config section (a dataclass instance)."""
    return typing.get_type_hints(type(section))


def _describe(kind: Any) -> str:
    """What a value of type ``kind`` looks like, for messages."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return " or ".join(str(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} numbers"
    if origin is list:
        return "a list of names"
    return _NAMES.get(kind, getattr(kind, "__name__", str(kind)))


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


def _number(value: Any) -> Any:
    """``value``, with a YAML 1.1 string such as "1e-3" read as the number it spells."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def _coerce(value: Any, kind: Any, path: str) -> Any:
    """A YAML/CLI value converted to a field's declared type ``kind``; ConfigError naming the
    field when it cannot be."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{path} may not be empty: give {_describe(kind)}")
    options = args if origin in (typing.Union, types.UnionType) else (kind,)
    for option in options:
        if typing.get_origin(option) is typing.Literal and value in typing.get_args(option):
            return value
    if bool in options and isinstance(value, bool):
        return value
    if origin is tuple:
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            numbers = [_number(v) for v in value]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
                return tuple(float(v) for v in numbers)
        raise ConfigError(f"{path} must be {_describe(kind)}, got {value!r}")
    if origin is list:
        return [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    number = _number(value)
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        if int in options and float in options:  # a count or a fraction (data.subset)
            return number
        if float in options:
            return float(number)
        if int in options and float(number).is_integer():
            return int(number)
    if str in options and not isinstance(value, (bool, list, dict)):
        return str(value)  # a folder may well be called 2024
    raise ConfigError(f"{path} must be {_describe(kind)}, got {value!r}")


def set_field(cfg: Any, path: str, value: Any) -> None:
    parts = path.split(".")
    if len(parts) != 2:
        raise ConfigError(f"config key {path!r} must look like section.field")
    section, name = parts
    if section not in _sections(cfg):
        raise ConfigError(f"unknown config section {section!r} in {path!r}")
    obj = getattr(cfg, section)
    kinds = _field_types(obj)
    if name not in kinds:
        raise ConfigError(f"unknown config field {path!r}")
    setattr(obj, name, _coerce(value, kinds[name], path))


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.field=value")
    key, raw = text.split("=", 1)
    if not raw.strip():
        return key.strip(), None
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({problem})") from None


SHIPPED_CONFIGS = "mimkit.configs"


def _shipped_folder(folder: str | None) -> Any:
    root = resources.files(SHIPPED_CONFIGS)
    return root / folder if folder else root


def shipped_config_names(folder: str | None = None) -> list[str]:
    """Names of the YAML configs shipped in ``mimkit/configs`` (or its sub-``folder``)."""
    return sorted(
        p.name.removesuffix(".yaml")
        for p in _shipped_folder(folder).iterdir()
        if p.name.endswith(".yaml")
    )


def read_config_file(name_or_path: str, folder: str | None = None) -> dict[str, Any]:
    """Read a YAML config from a path, or by the name of a config shipped with mimkit (in
    ``mimkit/configs``, or its sub-``folder`` such as ``finetune``)."""
    path = Path(name_or_path)
    if path.is_file():
        text = path.read_text()
    else:
        name = f"{name_or_path.removesuffix('.yaml')}.yaml"
        shipped = _shipped_folder(folder) / name
        if not shipped.is_file():
            raise ConfigError(
                f"config {name_or_path!r} is neither a file nor a shipped config "
                f"({', '.join(shipped_config_names(folder))})"
            )
        text = shipped.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config {name_or_path!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {name_or_path!r} must be a mapping of sections")
    return data


Sectioned = TypeVar("Sectioned", bound=SectionedConfig)


def load_sections(
    cls: type[Sectioned],
    name_or_path: str | None,
    overrides: list[tuple[str, Any]] = (),
    folder: str | None = None,
) -> Sectioned:
    """A ``cls`` config from a YAML file or shipped name (None: the defaults), then the
    ``section.field`` overrides in order."""
    cfg = cls.from_dict(read_config_file(name_or_path, folder)) if name_or_path else cls()
    for key, value in overrides:
        set_field(cfg, key, value)
    return cfg


def load_config(name_or_path: str | None, overrides: list[tuple[str, Any]] = ()) -> PretrainConfig:
    """A pretraining config; fields that must fit the patch grid and that the overrides
    changed the grid of without setting them are derived again (``grid_fields.py``)."""
    from mimkit.grid_fields import derive_grid_fields

    base = load_sections(PretrainConfig, name_or_path)
    cfg = copy.deepcopy(base)
    for key, value in overrides:
        set_field(cfg, key, value)
    derive_grid_fields(base, cfg, {key for key, _ in overrides})
    return cfg
