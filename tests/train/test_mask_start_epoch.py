"""masking.start_epoch: iBOT's pred_start_epoch (no masks before it, patch term then zero)."""

from __future__ import annotations

import pytest
import torch

from mimkit.errors import ConfigError
from mimkit.ibot.config import load_config
from mimkit.ibot.pretrain import build_pretraining, run_pretraining
from mimkit.ibot.schedules import masking_started
from mimkit.ibot.validation import validate_config
from mimkit.losses import IBOTLoss, masked_patches
from mimkit.train.logging import read_log


@pytest.mark.parametrize(
    ("start", "steps_per_epoch", "first_masked"),
    [(0.0, 5, 0), (1.0, 5, 5), (2.0, 7, 14), (0.4, 5, 2), (0.5, 5, 3), (1.25, 4, 5)],
)
def test_masks_begin_at_the_first_step_of_the_start_epoch(start, steps_per_epoch, first_masked):
    started = [masking_started(s, steps_per_epoch, start) for s in range(30)]
    assert started == [s >= first_masked for s in range(30)]
    # The same rule in words: step s draws masks iff s / steps_per_epoch >= start.
    assert started == [s / steps_per_epoch >= start for s in range(30)]


def test_no_masks_and_a_zero_patch_term_before_start_epoch(make_config):
    # 5 steps per epoch; masks start with the second epoch (step index 5, logged as step 6).
    cfg = make_config(**{"masking.start_epoch": 1.0, "run.max_steps": 7})
    loop = build_pretraining(cfg)
    trainer = loop.method
    drawn: list[int] = []
    real_plan = trainer.masker.plan

    def counting(*args, **kwargs):
        drawn.append(1)
        return real_plan(*args, **kwargs)

    trainer.masker.plan = counting  # type: ignore[method-assign]
    loop.fit()
    loop.close()
    rows = read_log(cfg.run.output_dir, "step")
    assert [r["step"] for r in rows] == list(range(1, 8))
    for r in rows[:5]:
        assert r["mask_ratio"] == 0.0 and r["patch"] == 0.0 and r["cls"] > 0
    for r in rows[5:]:
        assert r["mask_ratio"] > 0.0 and r["patch"] > 0.0
    assert len(drawn) == 2  # no mask is even drawn before the start


def test_start_epoch_zero_masks_from_the_first_step(make_config):
    cfg = make_config(**{"run.max_steps": 1})
    run_pretraining(cfg)
    assert read_log(cfg.run.output_dir, "step")[0]["mask_ratio"] > 0


def test_patch_term_without_masked_patches_is_zero_with_no_gradient():
    # The reference averages the patch loss over masked patches only (count clamped to 1),
    # so unmasked images contribute exactly 0 and no gradient to the patch outputs.
    torch.manual_seed(0)
    loss = IBOTLoss(8, 8, 2)
    s_patch = torch.randn(4, 9, 8, requires_grad=True)
    t_patch = torch.randn(4, 9, 8)
    picked = masked_patches(torch.zeros(4, 9, dtype=torch.bool))
    s_rows, t_rows = s_patch.flatten(0, 1)[picked.rows], t_patch.flatten(0, 1)[picked.rows]
    out = loss(
        torch.randn(4, 8), torch.randn(4, 8), s_rows, t_rows, picked.weight,
        t_patch.mean(1), 0.04, 0.04,
    )
    assert out["patch"].item() == 0.0
    out["loss"].backward()
    assert s_patch.grad is not None and not s_patch.grad.any()


@pytest.mark.parametrize("value", [-0.5, float("nan")])
def test_negative_start_epoch_is_refused(value):
    cfg = load_config(None, [("masking.start_epoch", value)])
    with pytest.raises(ConfigError, match="start_epoch"):
        validate_config(cfg)
