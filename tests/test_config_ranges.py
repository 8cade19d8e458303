"""Every numeric config field is checked (finite, in range) before any work starts."""

from __future__ import annotations

import dataclasses
import math
from numbers import Real

import pytest

from mimkit.config import RANGE, Interval, set_field
from mimkit.errors import ConfigError
from mimkit.finetune import FinetuneConfig
from mimkit.ibot.config import PretrainConfig, load_config


def numeric_fields() -> list[str]:
    cfg = PretrainConfig()
    cfg.data.subset, cfg.run.max_steps, cfg.run.threads = 0.5, 10, 1  # optional ones, set
    cfg.run.save_every_steps = 5
    paths = []
    for section in dataclasses.fields(cfg):
        part = getattr(cfg, section.name)
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            first = value[0] if isinstance(value, tuple) else value
            if isinstance(first, Real) and not isinstance(first, bool):
                paths.append(f"{section.name}.{f.name}")
    return paths


def test_every_shipped_default_passes():
    PretrainConfig().check_fields()
    for name in ("fashion_mnist_vit_mini", "imagenet20_vit_small_thesis"):
        load_config(name).check_fields()


@pytest.mark.parametrize("path", numeric_fields())
def test_nan_in_any_numeric_field_is_refused_by_name(path):
    cfg = PretrainConfig()
    section, name = path.split(".")
    value = getattr(getattr(cfg, section), name)
    # Set directly: integer fields already refuse NaN when parsed, the check must not rely on it.
    setattr(
        getattr(cfg, section),
        name,
        (math.nan,) * len(value) if isinstance(value, tuple) else math.nan,
    )
    with pytest.raises(ConfigError, match=rf"^{path} must( each)? be a finite number"):
        cfg.check_fields()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("data.num_workers", -1, "data.num_workers must be >= 0, got -1"),
        ("run.log_every_steps", 0, "run.log_every_steps must be >= 1, got 0"),
        ("model.patch_size", 0, "model.patch_size must be >= 1, got 0"),
        ("optim.lr", -1.0, "optim.lr must be > 0, got -1.0"),
        ("optim.lr", "inf", "optim.lr must be a finite number, got inf"),
        ("optim.clip_grad", ".nan", "optim.clip_grad must be a finite number"),
        ("loss.teacher_temp", 0, "loss.teacher_temp must be > 0, got 0.0"),
        ("optim.warmup_epochs", -0.5, "optim.warmup_epochs must be >= 0, got -0.5"),
        ("optim.momentum_teacher", 1.5, r"must lie in \[0, 1\], got 1.5"),
        ("data.blur_prob", [1.0, 0.1, 2.0], r"data.blur_prob must each lie in \[0, 1\]"),
    ],
)
def test_out_of_range_values_name_the_field_and_the_range(path, value, message):
    import yaml

    cfg = PretrainConfig()
    set_field(cfg, path, yaml.safe_load(value) if isinstance(value, str) else value)
    with pytest.raises(ConfigError, match=message):
        cfg.check_fields()


def test_optional_fields_left_unset_pass():
    cfg = PretrainConfig()
    assert cfg.run.max_steps is None and cfg.run.threads is None
    cfg.check_fields()


def test_every_numeric_field_of_both_methods_declares_its_range():
    # Fields whose rule is plain "finite" would let any sign through: none of those is left.
    for cfg in (PretrainConfig(), FinetuneConfig()):
        for section in dataclasses.fields(cfg):
            for f in dataclasses.fields(getattr(cfg, section.name)):
                value = getattr(getattr(cfg, section.name), f.name)
                first = value[0] if isinstance(value, tuple) else value
                numeric = isinstance(first, Real) and not isinstance(first, bool)
                assert not numeric or RANGE in f.metadata, f"{section.name}.{f.name}"


def test_fine_tuning_fields_are_checked_the_same_way():
    cfg = FinetuneConfig()
    cfg.optim.layer_decay = 0.0
    with pytest.raises(ConfigError, match=r"^optim.layer_decay must lie in \(0, 1\], got 0.0"):
        cfg.check_fields()


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [("> 0", [1e-9, 5], [0, -1]), ("[0, 1)", [0, 0.5], [1, -0.1]), ("(0, 1]", [1], [0, 2])],
)
def test_interval_bounds(text, inside, outside):
    rule = Interval.parse(text)
    assert all(rule.contains(x) for x in inside)
    assert not any(rule.contains(x) for x in outside + [math.nan, math.inf])
