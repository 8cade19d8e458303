from __future__ import annotations

import pytest
import yaml

from mimkit.config import parse_override
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
