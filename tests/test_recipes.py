"""The shipped pretraining recipes: the main and long configs and the recipe study's base run
on CPU, and every recipe of the study is a valid config before anything is trained."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from mimkit.cli import main
from mimkit.config import parse_override
from mimkit.ibot.config import load_config
from mimkit.ibot.validation import validate_config

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "benchmarks" / "recipes" / "fashion_mnist.yaml"


@pytest.mark.parametrize(
    "config",
    [
        "fashion_mnist_vit_mini",
        "fashion_mnist_long",
        str(ROOT / "benchmarks/recipes/fashion_mnist_study_base.yaml"),
    ],
)
def test_config_runs_two_steps_on_cpu(tmp_path: Path, config: str):
    out = tmp_path / "run"
    argv = ["pretrain", "--config", config, "--output-dir", str(out), "--no-knn",
            "--set", "run.max_steps=2", "--set", "data.num_workers=0",
            "--set", "run.progress=false", "--set", "run.tensorboard=false",
            "--set", "run.device=cpu", "--set", "run.log_every_steps=1"]
    assert main(argv) == 0
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if r["kind"] == "step"] == [1, 2]
    assert (out / "checkpoint.pth").is_file()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["loss"]["koleo"] == load_config(config).loss.koleo


def test_long_recipe_is_the_main_recipe_trained_longer():
    main_cfg, long_cfg = load_config("fashion_mnist_vit_mini"), load_config("fashion_mnist_long")
    for section in ("model", "data", "masking", "loss"):
        assert getattr(long_cfg, section) == getattr(main_cfg, section)
    assert long_cfg.optim.epochs > main_cfg.optim.epochs
    assert long_cfg.optim.lr == main_cfg.optim.lr
    assert long_cfg.run.knn_every_epochs > 0


def test_every_study_recipe_is_a_valid_config():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from recipe_study import command, load_recipes

    data, recipes = load_recipes(STUDY)
    assert len(recipes) >= 20
    for recipe in recipes:
        args = command(data, recipe, Path("runs/study"), 1)
        sets = [parse_override(args[i + 1]) for i, a in enumerate(args) if a == "--set"]
        if "--epochs" in args:
            sets.append(("optim.epochs", int(args[args.index("--epochs") + 1])))
        cfg = load_config(str(ROOT / args[args.index("--config") + 1]), sets)
        validate_config(cfg)  # raises on anything wrong, before any work
        assert cfg.optim.epochs == recipe["epochs"]
