"""The mask diagnostics of a model: hardness is the patch term's cross-entropy, AttMask-High
overlaps itself and not AttMask-Low, and the values logged during training are the values
computed afterwards from the checkpoint of that epoch."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mimkit.ibot.mask_diagnostics import (
    KEYS,
    DiagnosticBatch,
    MaskedModel,
    _patch_cross_entropy,
    checkpoint_diagnostics,
    diagnostic_batch,
    mask_diagnostics,
)
from mimkit.ibot.meta_arch import IBOTMetaArch
from mimkit.ibot.pretrain import build_schedules, run_pretraining
from mimkit.losses import masked_patches
from mimkit.train.logging import read_log


def _method(cfg) -> IBOTMetaArch:
    return IBOTMetaArch(cfg, build_schedules(cfg, 5, 1), torch.device("cpu"))


def test_hardness_terms_are_the_patch_term_of_the_loss(make_config):
    cfg = make_config(**{"loss.teacher_patch_temp": 0.05, "loss.warmup_teacher_patch_temp": 0.05})
    method = _method(cfg)
    method.loss.center2.normal_()  # a centre that matters
    model = MaskedModel.of_method(method)
    batch = diagnostic_batch(cfg, 4)
    views = batch.images[:6].repeat(2, 1, 1, 1)
    masks = torch.zeros(12, 16, dtype=torch.bool)
    for i in range(12):  # the same count per image: the loss's per-image mean is the mean
        masks[i, torch.randperm(16, generator=torch.Generator().manual_seed(i))[:5]] = True
    with torch.no_grad():
        method.student.eval()
        teacher = method.teacher.encode(views, method.request)
        ce = _patch_cross_entropy(model, views, masks, teacher)
        picked = masked_patches(masks)
        student = method.student(views, masks, None, picked.rows)
        t_patch = method.teacher.head.patch_layer(teacher.patch_embed[picked.rows])
        zeros = torch.zeros(12, cfg.model.out_dim)
        terms = copy.deepcopy(method.loss)(
            zeros, zeros, student.patch_logits, t_patch, picked.weight,
            torch.zeros(12, cfg.model.patch_out_dim), 0.04, 0.05,
        )  # fmt: skip
    assert ce == pytest.approx(float(terms["patch"]), rel=1e-5)


@pytest.mark.parametrize("mode", ["high", "low", "random", "block", "hint"])
def test_overlap_with_attmask_high_and_the_other_values(make_config, mode):
    fields = {"masking.strategies": [mode], "masking.ratio": [0.2, 0.45], "masking.show_max": 0.5}
    cfg = make_config(**fields)  # hint reveals 1 to 3 of its 3 to 7 patches
    model = MaskedModel.of_method(_method(cfg))
    batch = diagnostic_batch(cfg, 4)
    values = mask_diagnostics(model, batch)
    assert set(values) == set(KEYS)
    # At most 7 of 16 patches masked: the lowest-attended ones never meet the highest.
    expected_iou = {"high": 1.0, "low": 0.0}
    if mode in expected_iou:
        assert values["iou_high"] == pytest.approx(expected_iou[mode])
    else:
        assert 0.0 < values["iou_high"] < 1.0
    assert 0.05 < values["iou_chance"] < 0.3
    for key in ("object_coverage", "object_chance", "attention_entropy"):
        assert 0.0 <= values[key] <= 1.0
    assert values["hardness"] > 0
    assert mask_diagnostics(model, batch) == values  # a fixed batch and fixed draws


def test_data_without_an_object_rule_leaves_coverage_empty(make_config):
    cfg = make_config()
    model = MaskedModel.of_method(_method(cfg))
    batch = diagnostic_batch(cfg, 4)
    assert batch.objects is not None and batch.images.shape[0] == 64
    values = mask_diagnostics(model, DiagnosticBatch(batch.images, None, 0))
    assert math.isnan(values["object_coverage"]) and math.isnan(values["object_chance"])
    assert math.isfinite(values["hardness"])


@pytest.mark.slow
def test_logged_diagnostics_are_those_of_the_saved_checkpoint(make_config):
    cfg = make_config(
        **{"run.diagnostics_every_epochs": 2, "optim.epochs": 3, "run.keep_every_epochs": 1,
           "masking.strategies": ["hint"], "masking.show_max": 0.5}
    )  # fmt: skip
    assert run_pretraining(cfg).status == "finished"
    logged = {r["epoch"]: r for r in read_log(cfg.run.output_dir, "epoch")}
    assert "masks_hardness" not in logged[1]  # due at epoch 2 and at the last one
    for epoch in (2, 3):
        assert logged[epoch]["masks_version"] == 1
        path = f"{cfg.run.output_dir}/checkpoint_{epoch:04d}.pth"
        after = checkpoint_diagnostics(cfg, path, torch.device("cpu"))
        for key in KEYS:
            assert logged[epoch][f"masks_{key}"] == pytest.approx(after[key], rel=1e-4), key


@pytest.mark.parametrize(
    "strategy", ["green", "mix@pred", "sample@adv", "sample:0.5@raw", "mix:0:1:linear@raw"]
)
def test_every_new_family_has_its_diagnostics(make_config, strategy):
    """The families added after AttMask (learned scores included) are measured like the
    others: finite coverage, hardness, overlap and entropy."""
    cfg = make_config(**{"masking.strategies": [strategy]})
    method = _method(cfg)
    values = mask_diagnostics(MaskedModel.of_method(method), diagnostic_batch(cfg, 4))
    for key in ("hardness", "iou_high", "object_coverage", "attention_entropy"):
        assert math.isfinite(values[key]), (key, values)
