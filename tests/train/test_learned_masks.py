"""The new mask families inside the iBOT step on real (embedded) images with a tiny ViT:
they train, their heads learn from their own objective only where intended, and the heads
are saved, resumed and drawn from a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from mimkit.cli import main
from mimkit.data.crops import Crops
from mimkit.ibot.pretrain import build_pretraining, run_pretraining
from mimkit.train.checkpoint import load_checkpoint
from mimkit.train.logging import read_log

NEW_FAMILIES = [
    (["green"], ()),
    (["mix@raw:1"], ()),
    (["mix:0:1:cosine@rollout"], ()),
    (["mix:-1:1:step@raw"], ()),
    (["sample:0.5@log"], ()),
    (["high@pred"], ("pred", "pred_rho", "pred_rho_student")),
    (["mix@pred", "sample@adv"], ("pred_rho", "adv_entropy", "adv_iou", "adv_rho")),
    (["high@adv"], ("adv_entropy", "adv_iou", "adv_rho")),
]


@pytest.mark.parametrize(("strategies", "logged"), NEW_FAMILIES, ids=lambda s: " ".join(s))
def test_every_new_family_trains(make_config, strategies, logged):
    cfg = make_config(**{"masking.strategies": strategies, "run.max_steps": 2})
    result = run_pretraining(cfg)
    assert result.status == "max_steps" and result.step == 2
    for r in read_log(cfg.run.output_dir, "step"):
        assert math.isfinite(r["loss"]) and r["patch"] > 0
        assert 0.05 < r["mask_ratio"] < 0.6
        for key in logged:
            assert math.isfinite(r[key]), key
        if "adv_entropy" in logged:  # a near-uniform policy at the start: about log N
            assert 0.9 * math.log(16) < r["adv_entropy"] <= math.log(16) + 1e-5


def test_straight_through_trains(make_config):
    cfg = make_config(
        **{"masking.strategies": ["sample@adv"], "loss.adv_estimator": "straight_through",
           "run.max_steps": 2}
    )  # fmt: skip
    assert run_pretraining(cfg).step == 2


# -- gradients only where intended -----------------------------------------------------------
def _gradients(make_config, name: str, strategies: list[str], **fields) -> dict[str, torch.Tensor]:
    """One step's student gradients on fixed crops and a fixed mask plan."""
    cfg = make_config(name, **{"masking.strategies": strategies, **fields})
    trainer = build_pretraining(cfg).method
    gen = torch.Generator().manual_seed(0)
    b = 8
    global_views = torch.randn(2 * b, 3, 16, 16, generator=gen)
    local_views = torch.randn(b, 3, 8, 8, generator=gen)
    views = Crops.from_list([*global_views.chunk(2), local_views], 2)
    plan = trainer.planner(3, b)
    torch.manual_seed(1)
    trainer.losses(views, 0.04, 0.07, plan, 0.5).loss.backward()
    assert all(p.grad is None for p in trainer.teacher.parameters())
    return {
        n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        for n, p in trainer.student.named_parameters()
    }


def _split(grads: dict[str, torch.Tensor], kind: str):
    head = {n: g for n, g in grads.items() if n.startswith(f"score_heads.{kind}.")}
    rest = {n: g for n, g in grads.items() if not n.startswith("score_heads.")}
    return head, rest


def test_the_loss_predictor_learns_from_its_own_term_only(make_config):
    off = _gradients(make_config, "off", ["mix@pred"], **{"loss.pred_weight": 0.0})
    head_only = _gradients(make_config, "head", ["mix@pred"], **{"loss.pred_grad": "head"})
    through = _gradients(make_config, "through", ["mix@pred"])  # HPM: into the backbone
    off_head, off_rest = _split(off, "pred")
    assert off_head and not any(g.any() for g in off_head.values())  # iBOT's loss: none
    pred_head, pred_rest = _split(head_only, "pred")
    assert any(g.any() for g in pred_head.values())
    for name, g in off_rest.items():  # detached input: the rest learns exactly as without it
        assert torch.equal(g, pred_rest[name]), name
    _, through_rest = _split(through, "pred")
    key = "backbone.blocks.0.attn.qkv.weight"
    assert not torch.equal(through_rest[key], off_rest[key])
    assert torch.equal(through_rest["head.last_layer.parametrizations.weight.original1"],
                       off_rest["head.last_layer.parametrizations.weight.original1"])  # fmt: skip


def test_the_policy_learns_from_its_own_objective_only(make_config):
    base = {"loss.adv_entropy": 0.0, "loss.adv_estimator": "straight_through"}
    adversary = _gradients(make_config, "adv", ["sample@adv"], **base)
    partner = _gradients(
        make_config, "partner", ["sample@adv"], **base, **{"loss.adv_lambda": [-1.0, -1.0]}
    )
    rf = {"loss.adv_entropy": 0.0, "loss.adv_estimator": "reinforce"}
    reinforce = _gradients(make_config, "rf", ["sample@adv"], **rf)
    rf_partner = _gradients(
        make_config, "rf-partner", ["sample@adv"], **rf, **{"loss.adv_lambda": [-1.0, -1.0]}
    )
    adv_head, adv_rest = _split(adversary, "adv")
    partner_head, partner_rest = _split(partner, "adv")
    rf_head, rf_rest = _split(reinforce, "adv")
    rf_partner_head, _ = _split(rf_partner, "adv")
    # The student's gradients do not see the policy's estimator, lambda or entropy bonus.
    for name, g in adv_rest.items():
        assert torch.equal(g, partner_rest[name]), name
        assert torch.equal(g, rf_rest[name]), name
    # The straight-through gradient reaches the policy, reversed by lambda.
    assert any(g.any() for g in adv_head.values())
    for name, g in adv_head.items():
        assert torch.equal(g, -partner_head[name]), name
    assert any(g.any() for g in rf_head.values())
    assert any(not torch.equal(g, adv_head[n]) for n, g in rf_head.items())
    for name, g in rf_head.items():
        torch.testing.assert_close(g, -rf_partner_head[name])


# -- checkpoints ------------------------------------------------------------------------------
def test_resume_with_the_heads_replays_the_same_run(make_config):
    fields = {"masking.strategies": ["mix@pred", "sample@adv"]}
    full = make_config("full", **fields)
    run_pretraining(full)
    part = make_config("part", **fields, **{"run.max_steps": 3})
    assert run_pretraining(part).step == 3
    resumed = make_config("part", **fields)
    assert run_pretraining(resumed).step == 10
    a = read_log(full.run.output_dir, "step")
    b = read_log(resumed.run.output_dir, "step")
    for key in ("loss", "pred", "pred_rho", "adv_entropy", "adv_iou"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], rel=1e-5, abs=1e-6)
    sa = load_checkpoint(f"{full.run.output_dir}/checkpoint.pth")
    sb = load_checkpoint(f"{resumed.run.output_dir}/checkpoint.pth")
    for network in ("student", "teacher"):
        heads = [k for k in sa[network] if k.startswith("score_heads.")]
        assert {k.split(".")[1] for k in heads} == {"pred", "adv"}
        for key in heads:
            torch.testing.assert_close(sa[network][key], sb[network][key], rtol=1e-4, atol=1e-5)


def test_masks_draws_the_learned_strategies_from_a_checkpoint(make_config, tmp_path, capsys):
    cfg = make_config(**{"masking.strategies": ["mix@pred", "sample@adv"], "run.max_steps": 1})
    run_pretraining(cfg)
    out = tmp_path / "pictures"
    argv = ["masks", "--checkpoint", f"{cfg.run.output_dir}/checkpoint.pth", "--num-images", "1",
            "--strategies", "high@pred", "sample@adv", "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert len(list(out.glob("*.png"))) == 1
    # A checkpoint without these heads: one line, nothing written.
    plain = make_config("plain", **{"run.max_steps": 1})
    run_pretraining(plain)
    argv[2] = f"{plain.run.output_dir}/checkpoint.pth"
    argv[-1] = str(tmp_path / "none")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no 'adv' head" in err
    assert not (tmp_path / "none").exists()


def test_the_command_line_takes_the_new_families(tmp_path, make_config):
    """`mimkit pretrain --mask ...` with options in the strings and schedules in --set."""
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(make_config("base").to_dict()))
    out = tmp_path / "out"
    argv = ["pretrain", "--config", str(config), "--output-dir", str(out), "--max-steps", "2",
            "--mask", "mix:-1:1:step@pred", "sample:0.5@adv", "--set", "loss.adv_lambda=[-1,1]",
            "--set", "loss.adv_lambda_schedule=linear"]  # fmt: skip
    assert main(argv) == 0
    steps = read_log(out, "step")
    assert [r["step"] for r in steps] == [1, 2]
    assert steps[0]["adv_lambda"] == -1.0 and -1.0 < steps[1]["adv_lambda"] < 1.0
