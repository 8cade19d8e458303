"""Behaviours checked against iBOT's own: the teacher's head, older checkpoints' configs."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from mimkit.ibot.config import PretrainConfig, load_config
from mimkit.ibot.meta_arch import build_network
from mimkit.ibot.validation import validate_config
from mimkit.train.checkpoint import first_change


def test_with_a_shared_head_the_teacher_patch_prototypes_are_its_cls_ones():
    # iBOT's teacher head is always shared (shared_head_teacher defaults to true): its patch
    # tokens go through the CLS prototypes. mimkit's teacher mirrors the student, so the two
    # agree whenever shared_head is true, as in every official iBOT / AttMask command.
    for recipe in ("imagenet_vit_small_ibot", "imagenet20_vit_small_attmask"):
        assert load_config(recipe).model.shared_head
    cfg = load_config(None, [("model.arch", "vit_nano"), ("model.img_size", 16)])
    teacher = build_network(cfg, 0.0)
    assert teacher.head.last_layer2 is None
    assert teacher.head.patch_layer is teacher.head.last_layer


def test_checkpoints_from_before_a_model_field_existed_still_match():
    cfg = load_config(None)
    defaults = PretrainConfig().to_dict()

    def change(saved_model, current):
        return first_change({"model": saved_model}, {"model": current.to_dict()["model"]}, defaults)

    saved = cfg.to_dict()["model"]
    assert change(saved, cfg) is None
    older = {k: v for k, v in saved.items() if k != "pos_interpolation"}
    assert change(older, cfg) is None  # the new field is at its default
    dino = load_config(None, [("model.pos_interpolation", "dino")])
    assert change(older, dino) == ("model.pos_interpolation", "size", "dino")
    assert change({**saved, "out_dim": 7}, cfg) == ("model.out_dim", 7, cfg.model.out_dim)
    assert change({**saved, "unknown": 1}, cfg) == ("model.unknown", 1, None)


# The switch that gives each reference behaviour, and its reference value.
REFERENCE_SWITCHES = {
    "model.pos_interpolation": "dino",
    "model.shared_head": True,
    "data.blur_sigma_scaled": False,
    "data.batch_augment": False,  # image by image with PIL, on array data too
    "masking.hint_reveal": "independent",
    "masking.start_epoch": 0.0,
    "loss.teacher_temp_warmup": "epoch",
    "optim.clip_mode": "param",
    "optim.decay_tokens": True,
    "optim.lr_warmup": "linspace",
    "run.amp": "fp16",
}
RECIPES = ("imagenet_vit_small_ibot", "imagenet20_vit_small_attmask", "imagenet20_vit_small_thesis")


def _value(cfg, key):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


@pytest.mark.parametrize("recipe", RECIPES)
def test_reference_recipes_set_every_switch_to_the_reference(recipe):
    cfg = load_config(recipe, [("data.dataset", "embedded")])  # the ImageNet path is a stand-in
    validate_config(cfg)
    for key, value in REFERENCE_SWITCHES.items():
        assert _value(cfg, key) == value, (recipe, key)
    header = (resources.files("mimkit.configs") / f"{recipe}.yaml").read_text().split("\nmodel:")[0]
    assert "Source" in header and "docs/differences.md" in header


def test_attmask_recipe_matches_the_official_20_percent_command():
    cfg = load_config("imagenet20_vit_small_attmask")
    d, o, m, k, lo = cfg.data, cfg.optim, cfg.model, cfg.masking, cfg.loss
    assert (d.local_crops, o.momentum_teacher, cfg.run.amp) == (6, 0.99, "fp16")
    assert (o.batch_size, o.epochs, d.subset, lo.warmup_teacher_temp_epochs) == (60, 100, 260, 30)
    assert (m.out_dim, m.patch_out_dim, m.norm_last_layer) == (8192, 8192, False)
    assert (k.ratio, k.mask_prob, k.ratio_per) == ((0.1, 0.5), 0.5, "step")
    assert (tuple(d.global_scale), tuple(d.local_scale)) == ((0.25, 1.0), (0.05, 0.25))
    assert (o.lr, o.min_lr, o.warmup_epochs, o.clip_grad, o.freeze_last_layer) == (
        5e-4, 1e-6, 10, 3.0, 1
    )
    assert (lo.teacher_temp, lo.teacher_patch_temp, lo.warmup_teacher_temp) == (0.07, 0.07, 0.04)


def test_ibot_recipe_matches_the_official_vit_small_command():
    cfg = load_config("imagenet_vit_small_ibot")
    d, o, k = cfg.data, cfg.optim, cfg.masking
    assert (d.local_crops, o.momentum_teacher, o.batch_size) == (10, 0.996, 64)
    assert (k.strategies, k.ratio, k.mask_prob) == (["block"], (0.1, 0.5), 0.5)
    assert k.ratio_per == "image"  # iBOT draws a ratio for every crop of every image
    assert cfg.loss.warmup_teacher_temp_epochs == 30 and cfg.model.out_dim == 8192


def test_every_switch_is_in_the_differences_table():
    table = (Path(__file__).parents[2] / "docs" / "differences.md").read_text()
    for key in REFERENCE_SWITCHES:
        assert f"`{key}" in table, key
    for key in ("masking.ratio_per", "optim.clip_mode", "masking.show_max"):
        assert f"`{key}" in table, key
