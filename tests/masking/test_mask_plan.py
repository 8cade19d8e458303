"""The mask plan (drawn on the CPU, in the loader workers during training) and the masks
finished from it on the device agree: shapes, every image's count, the skips."""

from __future__ import annotations

import pytest
import torch

from mimkit.masking import MaskGenerator, MaskPlan, parse_strategies
from mimkit.masking.config import MaskingConfig
from mimkit.models import Readout

DEPTH, GRID = 3, 6
N = GRID * GRID


@pytest.mark.parametrize(
    "texts",
    [
        ["random"],
        ["block"],
        ["high"],
        ["low@raw:0"],
        ["hint"],
        ["block", "hint@raw:1"],
        ["high@raw:0", "random"],
    ],  # fmt: skip
    ids=lambda t: "+".join(t),
)
@pytest.mark.parametrize(
    ("ratio_per", "reveal"), [("image", "own"), ("batch", "own"), ("step", "independent")]
)
def test_plan_counts_are_the_finished_masks_counts(texts, ratio_per, reveal):
    b = 40
    crops = len(texts) if len(texts) > 1 else 2
    cfg = MaskingConfig(
        ratio=(0.1, 0.7), ratio_per=ratio_per, mask_prob=0.6, show_max=0.5, hint_reveal=reveal
    )
    gen = MaskGenerator(parse_strategies(texts, crops, DEPTH), cfg, DEPTH)
    g = torch.Generator().manual_seed(len(texts) + len(ratio_per))
    readout = Readout(cls_attn={i: torch.rand(crops * b, 2, N, generator=g) for i in range(3)})
    plan = gen.plan(b, GRID, g)
    assert isinstance(plan, MaskPlan)
    assert plan.ratio.shape == plan.keep.shape == plan.counts.shape == (crops, b)
    assert plan.masks.shape == (crops, b, N)
    masks = gen.complete(plan, readout, b, GRID)
    assert plan.total == sum(int(m.sum()) for m in masks)
    for c, (m, strategy) in enumerate(zip(masks, gen.strategies, strict=True)):
        flat = m.flatten(1)
        assert m.shape == (b, GRID, GRID)
        assert torch.equal(flat.sum(1), plan.counts[c])
        assert not flat[~plan.keep[c]].any()  # a skipped image has no mask
        if strategy.attention_guided:  # the planned ranks, put on the patches by score
            order = gen.scores(readout, c, b).argsort(1, descending=strategy.mode != "low")
            assert torch.equal(flat.gather(1, order), plan.masks[c])
        else:
            assert torch.equal(flat, plan.masks[c])
        if ratio_per != "image":
            assert len(set(plan.ratio[c].tolist())) == 1
        if ratio_per == "step":
            assert torch.equal(plan.ratio[c], plan.ratio[0])
        assert ((plan.ratio[c] >= 0.1) & (plan.ratio[c] < 0.7)).all()
    if "hint" in texts[-1]:  # hint reveals some: counts below floor(r * N) for kept images
        kept = plan.keep[-1]
        chosen = torch.floor(plan.ratio[-1] * N + 1e-9).long()
        assert (plan.counts[-1][kept] < chosen[kept]).any()


def test_empty_plan_masks_nothing():
    gen = MaskGenerator(parse_strategies(["block", "high"], 2, DEPTH), MaskingConfig(), DEPTH)
    plan = MaskPlan.empty(2, 5, N)
    assert plan.total == 0
    masks = gen.complete(plan, None, 5, GRID)  # not even a readout is needed
    assert not any(m.any() for m in masks)
