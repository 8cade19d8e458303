"""Compare configs are validated as a whole grid before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from compare_fixtures import tiny_compare

from mimkit.cli import main
from mimkit.compare import build_grid, load_compare_config, parse_compare_config
from mimkit.config import shipped_config_names
from mimkit.errors import ConfigError


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"strategies": [{"name": "A", "mask": "random"}, {"name": "B", "mask": "high@raw:7"}]},
            "layer 7 is out of range",
        ),
        ({"strategies": [{"name": "A", "mask": "highest"}]}, "unknown mask mode"),
        (
            {"strategies": [{"name": "A", "mask": "random", "overrides": {"optim.nope": 1}}]},
            "unknown config field 'optim.nope'",
        ),
        ({"overrides": {"model.archh": "vit_nano"}}, "overrides: unknown config field"),
        (
            {"strategies": [{"name": "A", "mask": ["high", "low", "hint"]}]},
            "3 mask strategies given for 2 global crops",
        ),
        (
            {"strategies": [{"name": "A", "mask": "random"}, {"name": "a", "mask": "block"}]},
            "clashes",
        ),
        ({"eval": {"knn": {"k": [10]}}}, "eval: unknown config field 'knn.k'"),
        ({"eval": {"knn_ks": [10]}}, "eval.knn_ks is now eval.knn.ks"),
        ({"eval": {"knn": {"ks": [0]}}}, "eval.knn.ks must be >= 1, got [0]"),
        ({"eval": {"fewshot": {"shots": "x"}}}, "fewshot.shots must be an integer"),
        ({"eval": {"linear": {"lr": "fast"}}}, "eval.linear.lr must be a number"),
        ({"eval": {"finetune": {"strategies": ["Nope"]}}}, "'Nope' is not a strategy"),
        ({"eval": {"knn": {"features": ["patch"]}}}, "eval.knn.features must be"),
        ({"seeds": [0, 0]}, "duplicates"),
        ({"colour": 1}, "unknown compare config key"),
    ],
)
def test_bad_grid_fails_before_any_folder(tmp_path: Path, write_compare, capsys, change, message):
    data = tiny_compare()
    data.update(change)
    cfg = write_compare(data)
    out = tmp_path / "out"
    assert main(["compare", "--config", str(cfg), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_strategy_error_names_the_strategy(tmp_path: Path):
    data = tiny_compare()
    data["strategies"].append({"name": "Too deep", "mask": ["high@rollout:0-9"]})
    cc = parse_compare_config(data)
    with pytest.raises(ConfigError, match="strategy 'Too deep'"):
        build_grid(cc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_grid_expansion_seeds_epochs_overrides(tmp_path: Path):
    data = tiny_compare(epochs=[1, 2])
    data["strategies"] = [
        {"name": "Random", "mask": "random"},
        {
            "name": "High + contrastive",
            "mask": ["high"],
            "seeds": [5],
            "overrides": {"loss": {"lambda3": 0.5}},
        },
    ]
    grid = build_grid(parse_compare_config(data), tmp_path)
    names = [r.name for r in grid]
    assert names == [  # every strategy's first seed first
        "random-s0-e1",
        "random-s0-e2",
        "high-contrastive-s5-e1",
        "high-contrastive-s5-e2",
        "random-s1-e1",
        "random-s1-e2",
    ]
    r = grid[3]
    assert r.config.loss.lambda3 == 0.5 and r.config.run.seed == 5 and r.config.optim.epochs == 2
    assert r.config.run.keep_every_epochs == 1 and r.eval_epochs == [1, 2]
    assert Path(r.config.run.output_dir) == tmp_path / "runs" / "high-contrastive-s5-e2"
    assert grid[0].config.loss.lambda3 == 0.0


def test_eval_epochs_include_the_final_one(tmp_path: Path):
    grid = build_grid(
        parse_compare_config(tiny_compare(epochs=5, eval={"knn": {"every": 2}})), tmp_path
    )
    assert grid[0].eval_epochs == [2, 4, 5] and grid[0].name == "random-s0"


def test_existing_run_with_other_config_is_refused(tmp_path: Path, write_compare, capsys):
    cfg = write_compare(tiny_compare())
    run_dir = tmp_path / "out" / "runs" / "random-s0"
    run_dir.mkdir(parents=True)
    other = tiny_compare()["overrides"] | {"optim.lr": 0.5}
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"optim": {"lr": other["optim.lr"]}}))
    assert main(["compare", "--config", str(cfg), "--output-dir", str(tmp_path / "out")]) == 2
    assert "was trained with another config" in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs" / "random-s1").exists()


def test_shipped_compare_config_is_valid_and_hidden_from_pretrain_configs(tmp_path: Path):
    assert not any("compare" in n or "strategies" in n for n in shipped_config_names())
    cc = load_compare_config("fashion_mnist_strategies")
    grid = build_grid(cc, tmp_path)
    names = {s.name for s in cc.strategies}
    assert {"Random", "Block", "AttMask-High", "AttMask-Low", "AttMask-Hint"} <= names
    seeds = {s.name: len(s.seeds) for s in cc.strategies}
    assert all(seeds[n] >= 3 for n in ("Random", "Block", "AttMask-High", "AttMask-Hint"))
    assert any(r.config.loss.lambda3 > 0 for r in grid)
    assert any(len(r.config.masking.strategies) == 2 for r in grid)  # per-crop multi-layer
    # a grid of at least 7x7 patches, so that "the most attended patches" is a real choice
    assert all(r.config.model.img_size // r.config.model.patch_size >= 7 for r in grid)
    assert all(seeds[n] >= 5 for n in ("Random", "Block", "AttMask-High", "AttMask-Hint"))
    assert not (tmp_path / "runs").exists()


def test_unknown_only_is_an_error(tmp_path: Path, write_compare, capsys):
    cfg = write_compare(tiny_compare())
    argv = ["compare", "--config", str(cfg), "--output-dir", str(tmp_path / "o"), "--only", "x"]
    assert main(argv) == 2
    assert "--only 'x' is not a strategy" in capsys.readouterr().err


def test_a_second_compare_on_a_folder_in_use_is_refused(tmp_path: Path, write_compare, capsys):
    import os

    from mimkit.runs.lock import FolderLock

    cfg = write_compare(tiny_compare(seeds=[0], epochs=1))
    out = tmp_path / "out"
    with FolderLock(out, purpose="compare"):  # as a first `mimkit compare` would
        code = main(["compare", "--config", str(cfg), "--output-dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"output folder {out} is in use by another mimkit compare (PID {os.getpid()})" in err
    assert sorted(p.name for p in out.iterdir()) == [".mimkit.lock"]  # nothing else written
    # a report, which only reads the runs' records, may be written while the grid trains
    with FolderLock(out, purpose="compare"):
        code = main(["compare", "--config", str(cfg), "--output-dir", str(out), "--report-only"])
    assert code == 0 and (out / "summary.md").is_file()


def test_gpu_compare_config_builds_on_an_image_folder(tmp_path: Path):
    from PIL import Image

    root = tmp_path / "in100"
    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            (root / split / cls).mkdir(parents=True)
            Image.new("RGB", (32, 24), (40, 80, 120)).save(root / split / cls / "a.JPEG")
    cc = load_compare_config("imagenet100_vit_small_strategies", [("data.dataset", str(root))])
    grid = build_grid(cc, tmp_path / "out")
    seeds = {s.name: len(s.seeds) for s in cc.strategies}
    main_five = ("Random", "Block", "AttMask-High", "AttMask-Hint", "Per-crop 11 + 4")
    assert all(seeds[n] == 10 for n in main_five)
    assert all(n >= 3 for n in seeds.values()) and len(grid) == 62
    cfg = grid[0].config
    assert (cfg.model.arch, cfg.model.img_size, cfg.model.patch_size) == ("vit_small", 224, 16)
    assert (cfg.data.global_crops, cfg.data.local_crops, cfg.optim.batch_size) == (2, 6, 64)
    assert cfg.data.subset is None and cfg.run.amp == "bf16" and cfg.optim.epochs == 100
    assert grid[0].eval_epochs == [25, 50, 75, 100]
    with pytest.raises(ConfigError, match="imagenet100"):  # the placeholder path is refused
        build_grid(load_compare_config("imagenet100_vit_small_strategies"), tmp_path / "o2")


CURRICULUM = {"adv_lambda": [-1, 1], "adv_lambda_schedule": "linear"}  # CL-MAE's


def test_the_new_mask_families_build_a_grid(tmp_path: Path):
    """Every new family is a strategy of a compare grid, with its own options and heads."""
    data = tiny_compare(seeds=[0])
    data["strategies"] = [
        {"name": "Green", "mask": "green"},
        {"name": "HPM", "mask": "mix@pred"},
        {"name": "Curriculum", "mask": "mix:0:1:cosine@raw:-1"},
        {"name": "Flip", "mask": "mix:-1:1:step@raw:-1"},
        {"name": "Sampled", "mask": "sample:0.5@log:-1"},
        {"name": "Adversary", "mask": "sample@adv", "overrides": {"loss": CURRICULUM}},
    ]
    grid = build_grid(parse_compare_config(data), tmp_path)
    assert [r.config.masking.strategies for r in grid] == [
        [s["mask"]] for s in data["strategies"]
    ]
    assert grid[-1].config.loss.adv_lambda == (-1.0, 1.0)
    data["strategies"].append({"name": "Bad", "mask": "mix@adv"})
    with pytest.raises(ConfigError, match="strategy 'Bad'.*'adv' goes with mode sample"):
        build_grid(parse_compare_config(data), tmp_path / "bad")
