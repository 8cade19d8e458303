"""Fields that must fit the patch grid: derived when the user changes the grid, and a clear
message naming sizes that work when an explicit one does not fit."""

from __future__ import annotations

import pytest

from mimkit.cli import main
from mimkit.errors import ConfigError
from mimkit.ibot.config import derived_local_crop_size, load_config, sizes_that_work
from mimkit.ibot.validation import validate_config

MAIN = "fashion_mnist_vit_mini"  # 28 px images, 7 px patches, 14 px local crop size


def test_a_new_patch_size_derives_the_local_crop_size_from_the_configs_ratio():
    cfg = load_config(MAIN, [("model.img_size", 32), ("model.patch_size", 4)])
    assert cfg.data.local_crop_size == 16  # half the global size, as 14 of 28 in the file
    validate_config(cfg)


def test_an_unchanged_grid_keeps_the_files_value():
    assert load_config(MAIN, [("optim.lr", 1e-4)]).data.local_crop_size == 14
    assert load_config(MAIN, [("model.arch", "vit_tiny")]).data.local_crop_size == 14


def test_a_swin_derives_a_multiple_of_its_final_stage_stride():
    # swin_nano has two stages: 4 px patches give 8 px cells on the mask grid; half of 40 px
    # is 20, between 16 and 24, and 2.5 cells round up.
    overrides = [("model.arch", "swin_nano"), ("model.img_size", 40), ("model.patch_size", 4)]
    cfg = load_config(MAIN, overrides)
    assert cfg.data.local_crop_size == 24
    vit = load_config(MAIN, overrides[1:])
    assert vit.data.local_crop_size == 20


def test_the_derived_size_is_at_least_one_patch():
    assert derived_local_crop_size(14, 28, 8, 4) == 4
    assert derived_local_crop_size(96, 224, 32, 16) == 16


def test_an_explicit_size_that_does_not_fit_names_sizes_that_do():
    overrides = [("model.img_size", 32), ("model.patch_size", 4), ("data.local_crop_size", 14)]
    cfg = load_config(MAIN, [*overrides, ("data.local_crops", 4)])  # unused sizes are not checked
    assert cfg.data.local_crop_size == 14  # the user's value is never replaced
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    message = str(err.value)
    assert "local crop size 14 is not divisible by patch size 4" in message
    assert "multiples of 4 such as 12 or 16" in message and "\n" not in message
    assert sizes_that_work(3, 32, 4) == "multiples of 4 such as 4"


@pytest.mark.slow
def test_img_and_patch_size_alone_run_on_the_default_config(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["pretrain", "--img-size", "32", "--patch-size", "4", "--output-dir", str(out)]
    small = ["--max-steps", "1", "--batch-size", "4", "--subset", "2", "--workers", "0"]
    assert main([*args, *small, "--no-knn", "--set", "run.progress=false"]) == 0, (
        capsys.readouterr().err
    )
    assert (out / "checkpoint.pth").is_file()
