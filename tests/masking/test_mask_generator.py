import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mimkit.errors import ConfigError
from mimkit.masking import MaskGenerator, parse_score, parse_strategies, select_mask
from mimkit.masking.config import MaskingConfig as MaskConfig
from mimkit.models import Readout, ReadoutRequest, build_vit

ALL = ["random", "block", "high", "low@log:0", "hint@power:1:2", "high@rollout", "high@multi:0+2"]


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return build_vit("vit_nano").eval()  # 16 px, patch 4: 4x4 grid, depth 3


def teacher_readout(vit, gen, crops, b, seed=0):
    x = torch.randn(crops * b, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return vit.forward_features(x, request=gen.readout_request()).readout


@pytest.mark.parametrize("texts", [[t] for t in ALL] + [["high@raw:2", "high@raw:0"]])
def test_end_to_end_with_tiny_vit(vit, texts):
    b, crops, grid = 5, 2, 4
    strategies = parse_strategies(texts, crops, vit.depth)
    cfg = MaskConfig(ratio=(0.5, 0.5), mask_prob=1.0)
    gen = MaskGenerator(strategies, cfg, vit.depth)
    readout = teacher_readout(vit, gen, crops, b)
    masks = gen.generate(readout, b, grid, torch.Generator().manual_seed(0))
    assert len(masks) == crops
    for c, m in enumerate(masks):
        assert m.shape == (b, grid, grid) and m.dtype == torch.bool
        flat = m.flatten(1)
        mode = strategies[c].mode
        if mode == "block":
            assert (flat.sum(1) <= 8).all()
        elif mode == "hint":
            assert (flat.sum(1) == 8 - math.floor(0.1 * 0.5 * 16)).all()
        else:
            assert (flat.sum(1) == 8).all()
        if mode in ("high", "low"):
            # the crop's own rows of the readout decide the mask
            s = gen.scores(readout, c, b)
            assert torch.equal(flat, select_mask(s, 0.5, mode))


def test_crops_use_their_own_rows(vit):
    b = 4
    gen = MaskGenerator(parse_strategies(["high@raw:2"], 2, vit.depth), MaskConfig(), vit.depth)
    readout = teacher_readout(vit, gen, 2, b)
    full = readout.cls_attn[2].mean(1)
    torch.testing.assert_close(gen.scores(readout, 0, b), full[:b])
    torch.testing.assert_close(gen.scores(readout, 1, b), full[b:])
    # a score of its own (e.g. for the contrastive term)
    other = MaskGenerator(parse_strategies("high@log:0", 2, vit.depth), MaskConfig(), vit.depth)
    ro = teacher_readout(vit, other, 2, b)
    torch.testing.assert_close(
        other.scores(ro, 1, b, parse_score("log:0")), ro.cls_attn[0][b:].log().mean(1)
    )


def test_readout_request_union():
    gen = MaskGenerator(
        parse_strategies(["high@raw:-1", "hint@rollout:1-2", "low@multi:0+2"], 3, 3),
        MaskConfig(),
        3,
    )
    req = gen.readout_request()
    assert req.cls_layers == frozenset({0, 2}) and req.rollout_ranges == frozenset({(1, 2)})
    plain = MaskGenerator(parse_strategies(["random", "block"], 2, 3), MaskConfig(), 3)
    assert plain.readout_request() == ReadoutRequest()


def test_random_and_block_need_no_readout():
    gen = MaskGenerator(parse_strategies(["random", "block"], 2, 12), MaskConfig(), 12)
    masks = gen.generate(None, 7, 14, torch.Generator().manual_seed(0))
    assert [m.shape for m in masks] == [(7, 14, 14)] * 2


def test_attention_strategy_without_readout_fails():
    gen = MaskGenerator(parse_strategies("high", 1, 12), MaskConfig(), 12)
    with pytest.raises(ValueError, match="readout"):
        gen.generate(None, 2, 14)


@settings(max_examples=12, deadline=None)
@given(
    b=st.integers(1, 6),
    grid=st.integers(2, 16),
    mode=st.sampled_from(["random", "block", "high", "low", "hint"]),
    seed=st.integers(0, 99),
)
def test_any_grid_any_batch(b, grid, mode, seed):
    depth, n = 3, grid * grid
    g = torch.Generator().manual_seed(seed)
    readout = Readout(cls_attn={2: torch.rand(2 * b, 2, n, generator=g).softmax(-1)})
    gen = MaskGenerator(parse_strategies(mode, 2, depth), MaskConfig(ratio=(0.1, 0.6)), depth)
    masks = gen.generate(readout, b, grid, g)
    for m in masks:
        assert m.shape == (b, grid, grid)
        assert (m.flatten(1).sum(1) <= math.floor(0.6 * n + 1e-9)).all()


@pytest.mark.parametrize("mode", ["random", "high", "hint"])
def test_ratio_range_and_skip_statistics(mode):
    b, grid, depth = 4000, 10, 2
    n = grid * grid
    g = torch.Generator().manual_seed(0)
    readout = Readout(cls_attn={1: torch.rand(b, 3, n, generator=g).softmax(-1)})
    cfg = MaskConfig(ratio=(0.2, 0.4), mask_prob=0.3)
    gen = MaskGenerator(parse_strategies(mode, 1, depth), cfg, depth)
    (m,) = gen.generate(readout, b, grid, g)
    count = m.flatten(1).sum(1)
    masked = count > 0
    assert abs(masked.float().mean().item() - 0.3) < 0.03
    frac = count[masked].float() / n
    lo = 0.2 * (0.9 if mode == "hint" else 1)
    assert frac.min() >= lo - 1e-6 and frac.max() <= 0.4
    # uniform ratio: the mean is near the middle and both halves are used
    # E[floor(100 r)] / 100 = 0.295; hint also reveals floor(10 r) (2.5 on average)
    assert abs(frac.mean().item() - (0.295 if mode != "hint" else 0.27)) < 0.01
    mid = 0.27 if mode == "hint" else 0.3
    assert (frac < mid - 0.05).float().mean() > 0.15 and (frac > mid + 0.05).float().mean() > 0.15


def test_ratio_per_batch_and_image():
    gen = MaskGenerator(
        parse_strategies("random", 1, 2), MaskConfig(ratio_per="batch", mask_prob=1.0), 2
    )
    for seed in range(5):
        (m,) = gen.generate(None, 30, 8, torch.Generator().manual_seed(seed))
        assert len(set(m.flatten(1).sum(1).tolist())) == 1
    gen = MaskGenerator(parse_strategies("random", 1, 2), MaskConfig(mask_prob=1.0), 2)
    (m,) = gen.generate(None, 30, 8, torch.Generator().manual_seed(0))
    assert len(set(m.flatten(1).sum(1).tolist())) > 3


def test_mask_prob_extremes_and_determinism():
    strategies = parse_strategies(["block", "random"], 2, 4)
    never = MaskGenerator(strategies, MaskConfig(mask_prob=0.0), 4)
    assert not any(m.any() for m in never.generate(None, 16, 6))
    gen = MaskGenerator(strategies, MaskConfig(mask_prob=1.0), 4)
    a = gen.generate(None, 16, 6, torch.Generator().manual_seed(9))
    b = gen.generate(None, 16, 6, torch.Generator().manual_seed(9))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(x.flatten(1).any(1).all() for x in a)


@pytest.mark.parametrize(
    "cfg, match",
    [
        (MaskConfig(ratio=(0.5, 0.1)), "lo <= hi"),
        (MaskConfig(ratio=(-0.1, 0.5)), "lo <= hi"),
        (MaskConfig(ratio=(0.1, 1.0)), "lo <= hi"),
        (MaskConfig(ratio=(0.1,)), "range"),
        (MaskConfig(ratio=0.3), "range"),
        (MaskConfig(ratio=("a", 0.3)), "numbers"),
        (MaskConfig(ratio_per="epoch"), "ratio_per"),
        (MaskConfig(mask_prob=1.5), "mask_prob"),
        (MaskConfig(show_max=0.0), "show_max"),
        (MaskConfig(show_max=1.1), "show_max"),
    ],
)
def test_config_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        cfg.validate()
    with pytest.raises(ConfigError, match=match):
        MaskGenerator(parse_strategies("random", 1, 2), cfg, 2)


def test_ratio_per_step_shares_one_ratio_across_crops():
    # AttMask draws one ratio per training step for both global crops (and every image).
    two = parse_strategies(["random", "random"], 2, 2)
    gen = MaskGenerator(two, MaskConfig(ratio_per="step", mask_prob=1.0), 2)
    counts = set()
    for seed in range(20):
        m1, m2 = gen.generate(None, 12, 8, torch.Generator().manual_seed(seed))
        step_counts = set(m1.flatten(1).sum(1).tolist()) | set(m2.flatten(1).sum(1).tolist())
        assert len(step_counts) == 1
        counts |= step_counts
    assert len(counts) > 5  # and it changes from step to step
    per_crop = MaskGenerator(two, MaskConfig(ratio_per="batch", mask_prob=1.0), 2)
    differ = 0
    for seed in range(20):
        m1, m2 = per_crop.generate(None, 12, 8, torch.Generator().manual_seed(seed))
        differ += int(m1.flatten(1).sum(1)[0] != m2.flatten(1).sum(1)[0])
    assert differ > 10


def _hint_counts(hint_reveal: str, ratio_per: str = "image") -> tuple[torch.Tensor, torch.Tensor]:
    """Masked count k and revealed count per image for hint on fixed, distinct scores."""
    b, grid, depth = 3000, 10, 2
    n = grid * grid
    scores = torch.linspace(1.0, 0.0, n).expand(b, n)  # patch j has rank j
    readout = Readout(cls_attn={1: scores[:, None, :]})  # one head
    cfg = MaskConfig(
        ratio=(0.55, 0.9), ratio_per=ratio_per, mask_prob=1.0, show_max=0.5, hint_reveal=hint_reveal
    )
    gen = MaskGenerator(parse_strategies("hint@raw:1", 1, depth), cfg, depth)
    (m,) = gen.generate(readout, b, grid, torch.Generator().manual_seed(0))
    m = m.flatten(1)
    # Reveals come from the top 50 patches and k >= 55, so patch k-1 is always masked.
    ranks = torch.arange(n).expand(b, n)
    k = torch.where(m, ranks, -1).max(1).values + 1
    return k.float(), (k - m.sum(1)).float()


def test_hint_reveal_own_ties_the_count_to_the_images_ratio():
    k, revealed = _hint_counts("own")
    assert torch.equal(revealed, torch.floor(0.5 * k + 1e-9))  # floor(show_max * r * N)
    assert torch.corrcoef(torch.stack([k, revealed]))[0, 1] > 0.99


def test_hint_reveal_independent_draws_another_ratio_for_the_count():
    k, revealed = _hint_counts("independent")
    assert abs(torch.corrcoef(torch.stack([k, revealed]))[0, 1].item()) < 0.06
    # The count is floor(0.5 * r' * 100) with r' ~ U(0.55, 0.9): 27..44, mean about 35.75.
    assert revealed.min() >= 27 and revealed.max() <= 45
    assert abs(revealed.mean().item() - 35.75) < 0.4
    # With one ratio per step, every image of the step reveals the same number.
    _, per_step = _hint_counts("independent", "step")
    assert len(set(per_step.tolist())) == 1


def test_independent_hint_draws_from_the_top_patches_masked_or_not():
    # AttMask's pool is the top floor(show_max * N) patches even when fewer are masked
    # (r < show_max): a drawn unmasked patch stays unmasked, so fewer masked ones are revealed.
    b, n = 4000, 100
    scores = torch.linspace(1.0, 0.0, n).expand(b, n)
    g = torch.Generator().manual_seed(0)
    m = select_mask(scores, 0.2, "hint", show_max=0.4, generator=g, reveal_ratio=0.5)
    # 20 masked, 20 draws from the top 40: on average 20 * 20 / 40 = 10 hit masked patches.
    revealed = (20 - m.sum(1)).float()
    assert abs(revealed.mean().item() - 10.0) < 0.1
    assert not m[:, 20:].any()  # nothing outside the top 20 is ever masked
    own = select_mask(scores, 0.2, "hint", show_max=0.4, generator=g)
    assert torch.equal(20 - own.sum(1), torch.full((b,), 8))  # floor(0.4 * 0.2 * 100), all masked
