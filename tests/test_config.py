from __future__ import annotations

import pytest
import yaml

from mimkit.config import load_sections, parse_override
from mimkit.errors import ConfigError
from mimkit.ibot.config import PretrainConfig, load_config


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(
        "fashion_mnist_vit_mini", [("optim.lr", 0.01), ("masking.strategies", ["high", "low"])]
    )
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    again = load_config(str(path))
    assert again == cfg and again.masking.strategies == ["high", "low"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.epochs=ten", "optim.epochs must be an integer"),
        ("run.progress=3", "true or false"),
        ("data.global_scale=[0.1]", "list of 2 numbers"),
        ("nosuch.field=1", "unknown config section"),
        ("optim.nosuch=1", "unknown config field"),
        ("justakey", "section.field=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [parse_override(override)])


def test_overrides_parse_yaml_scalars():
    assert load_config(None, [parse_override("optim.lr=1e-3")]).optim.lr == 1e-3
    assert parse_override("masking.strategies=[high, low]") == (
        "masking.strategies",
        ["high", "low"],
    )
    cfg = load_config(None, [parse_override("optim.warmup_epochs=1")])
    assert isinstance(cfg.optim.warmup_epochs, float)


def test_unknown_section_in_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("modle:\n  arch: vit_small\n")
    with pytest.raises(ConfigError, match="modle"):
        load_config(str(path))
    assert PretrainConfig().model.arch == "vit_mini"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("k={[", r"override 'k=\{\[': the value is not valid YAML"),
        ("data.global_scale=[a,b]", r"data.global_scale must be a list of 2 numbers, got \['a'"),
        ("masking.ratio=[0.1,x]", "masking.ratio must be a list of 2 numbers"),
        ("run.threads=abc", "run.threads must be an integer, got 'abc'"),
        ("run.threads=2.5", "run.threads must be an integer, got 2.5"),
        ("run.max_steps=abc", "run.max_steps must be an integer, got 'abc'"),
        ("run.save_every_steps=abc", "run.save_every_steps must be an integer"),
        ("data.subset=many", "data.subset must be a number or an integer"),
        ("data.batch_augment=sometimes", "data.batch_augment must be true or false or auto"),
        ("optim.lr=", "optim.lr may not be empty: give a number"),
        ("model.arch=", "model.arch may not be empty: give text"),
        ("data.dataset=", "data.dataset may not be empty"),
        ("data.global_scale=", "data.global_scale may not be empty: give a list of 2 numbers"),
        ("masking.strategies=", "masking.strategies may not be empty"),
        ("run.device=", "run.device may not be empty"),
        ("run.progress=", "run.progress may not be empty: give true or false"),
    ],
)
def test_values_of_the_wrong_type_or_empty_are_refused_by_name(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("fashion_mnist_vit_mini", [parse_override(override)])


def test_optional_fields_may_be_emptied_and_take_their_types():
    cfg = load_config(
        "fashion_mnist_vit_mini",
        [
            parse_override(text)
            for text in (
                "run.max_steps=", "data.subset=", "run.init=5", "run.output_dir=2024",
                "data.subset=20", "run.threads=2.0", "data.batch_augment=false",
            )
        ],
    )
    assert cfg.run.max_steps is None and cfg.run.init == "5" and cfg.run.output_dir == "2024"
    assert cfg.data.subset == 20 and isinstance(cfg.data.subset, int)
    assert cfg.run.threads == 2 and cfg.data.batch_augment is False
    assert load_config(None, [parse_override("data.subset=0.2")]).data.subset == 0.2
    assert load_config(None, [("data.batch_augment", "auto")]).data.batch_augment == "auto"


def test_finetune_configs_are_typed_the_same_way():
    from mimkit.finetune.config import FinetuneConfig

    with pytest.raises(ConfigError, match="optim.lr may not be empty"):
        load_sections(FinetuneConfig, "fashion_mnist", [parse_override("optim.lr=")], "finetune")
    cfg = load_sections(
        FinetuneConfig, None, [parse_override("model.img_size="), ("data.subset", 10)]
    )
    assert cfg.model.img_size is None and cfg.data.subset == 10


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain", "--set", "k={["],
        ["pretrain", "--set", "data.global_scale=[a,b]"],
        ["pretrain", "--set", "run.threads=abc"],
        ["pretrain", "--set", "run.max_steps=abc"],
        ["pretrain", "--set", "run.init=5"],
        ["pretrain", "--set", "run.save_every_steps=abc"],
        ["pretrain", "--set", "optim.lr="],
        ["finetune", "--init", "random", "--arch", "vit_nano", "--set", "optim.lr="],
        ["compare", "--dry-run", "--set", "data.global_scale=[a,b]"],
    ],
)
def test_bad_set_values_are_one_line_before_any_work(tmp_path, capsys, argv):
    from mimkit.cli import main

    out = tmp_path / "out"
    assert main([*argv, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"mimkit {argv[0]}: error: "), err
    assert not out.exists()
