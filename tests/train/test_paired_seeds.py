"""Paired seeds: runs of different mask strategies with the same seed start from the same
weights and see the same crops in the same order, and the masks draw from a stream of their
own, so drop path and every other random draw are untouched by the choice of strategy."""

from __future__ import annotations

import torch

from mimkit.ibot.pretrain import build_pretraining

STRATEGIES = (
    ["random"],
    ["block"],
    ["high@raw:-1"],
    ["hint@raw:-1"],
    ["green"],
    ["mix:0.5@raw:-1"],
    ["sample:0.01@log:-1"],
    # Learned scores: their heads come on top of the same weights. (A policy at its start
    # scores every patch about alike: sample@adv's masks are then random's, or nearly.)
    ["high@pred", "sample@adv"],
)


def _trace(make_config, name: str, strategies: list[str], seed: int = 3) -> dict:
    cfg = make_config(
        name,
        **{
            "masking.strategies": strategies,
            "masking.show_max": 0.5,
            "model.drop_path_rate": 0.3,  # the student draws from torch's global RNG
            "run.seed": seed,
            "run.max_steps": 3,
        },
    )
    loop = build_pretraining(cfg)
    trainer = loop.method
    seen: dict = {"weights": {k: v.clone() for k, v in trainer.student.state_dict().items()}}
    seen.update(crops=[], masks=[], rng=[])

    def student_inputs(module, args):
        global_views, masks, local_views = args[:3]
        seen["crops"].append(torch.cat([global_views.flatten(), local_views.flatten()]))
        seen["masks"].append(masks.clone())
        # The global RNG as the student (drop path) is about to use it, after the masks.
        seen["rng"].append(torch.get_rng_state())

    trainer.student_views.register_forward_pre_hook(student_inputs)
    assert loop.fit().step == 3
    loop.close()
    return seen


def test_same_seed_same_weights_crops_and_draws_only_masks_differ(make_config):
    base = _trace(make_config, "random", list(STRATEGIES[0]))
    for strategies in STRATEGIES[1:]:
        other = _trace(make_config, strategies[0].replace(":", "_"), list(strategies))
        extra = other["weights"].keys() - base["weights"].keys()
        assert base["weights"].keys() <= other["weights"].keys()
        assert all(key.startswith("score_heads.") for key in extra)
        for key, value in base["weights"].items():
            assert torch.equal(value, other["weights"][key]), key
        assert len(other["crops"]) == 3
        for a, b in zip(base["crops"], other["crops"], strict=True):
            assert torch.equal(a, b)
        for a, b in zip(base["rng"], other["rng"], strict=True):
            assert torch.equal(a, b)
        assert any(
            not torch.equal(a, b) for a, b in zip(base["masks"], other["masks"], strict=True)
        )


def test_another_seed_changes_weights_and_crops(make_config):
    a = _trace(make_config, "s3", ["random"], seed=3)
    b = _trace(make_config, "s4", ["random"], seed=4)
    key = "backbone.blocks.0.attn.qkv.weight"
    assert not torch.equal(a["weights"][key], b["weights"][key])
    assert not torch.equal(a["crops"][0], b["crops"][0])
