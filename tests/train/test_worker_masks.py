"""Masks that need no teacher are drawn in the loader workers, seeded by the step alone: the
workers draw what the training process would, and a resumed run replays the same masks."""

from __future__ import annotations

import torch

from mimkit.ibot.pretrain import build_pretraining

MIXED = ["block", "high"]  # one data-independent crop, one attention-guided crop


def test_workers_draw_the_plans_of_their_steps(make_config):
    cfg = make_config(**{"masking.strategies": MIXED, "data.num_workers": 2})
    loop = build_pretraining(cfg)
    planner = loop.method.planner
    b = cfg.optim.batch_size
    for epoch, start in ((0, 0), (1, 2)):
        batches = list(loop.data.loader(epoch, start, pin_memory=False))
        assert len(batches) == loop.steps_per_epoch - start
        for i, (_, _, plan) in enumerate(batches):
            step = epoch * loop.steps_per_epoch + start + i
            expected = planner(step, b)
            for got, want in zip(plan, expected, strict=True):
                assert torch.equal(got, want), step
            assert plan.masks[0].any()  # block masks arrive finished
            assert torch.equal(plan.counts, plan.masks.sum(2))  # high: ranks, by score later
    loop.close()


def _masks_per_step(make_config, name: str, workers: int, max_steps: int | None = None):
    cfg = make_config(
        name,
        **{"masking.strategies": MIXED, "data.num_workers": workers, "run.max_steps": max_steps},
    )
    loop = build_pretraining(cfg)
    seen: list[torch.Tensor] = []
    loop.method.student_views.register_forward_pre_hook(
        lambda module, args: seen.append(args[1].clone())
    )
    first = loop.start_step
    loop.fit()
    loop.close()
    return dict(enumerate(seen, start=first))


def test_resumed_run_replays_the_same_masks(make_config):
    full = _masks_per_step(make_config, "full", workers=2)
    assert len(full) == 10
    part = _masks_per_step(make_config, "part", workers=0, max_steps=3)
    assert sorted(part) == [0, 1, 2]
    resumed = _masks_per_step(make_config, "part", workers=2)
    assert sorted(resumed) == list(range(3, 10))
    for step, masks in {**part, **resumed}.items():
        assert torch.equal(masks, full[step]), step
    assert len({m.sum().item() for m in full.values()}) > 1  # the masks do change per step
