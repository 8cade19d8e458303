"""The rank-only mask families: ``mix`` (HPM's rule and its curricula), ``sample``
(Gumbel-top-k) and ``green`` (band-pass noise). Exact budgets, the endpoints that must equal
existing modes exactly, agreement with per-image loop references on the same draws, and
HPM's official selection rule on identical inputs."""

from __future__ import annotations

import math

import pytest
import torch

from mimkit.errors import ConfigError
from mimkit.masking import (
    MaskGenerator,
    Ramp,
    green_mask,
    green_noise,
    mask_crop,
    parse_strategies,
    parse_strategy,
    random_mask,
)
from mimkit.masking.config import MaskingConfig
from mimkit.masking.green_noise import dog_kernel
from mimkit.masking.stochastic import gumbel
from mimkit.masking.strategy import finish_crop, plan_crop
from mimkit.models import Readout

DEPTH, GRID = 3, 7
N = GRID * GRID


def _readout(batch: int, seed: int = 0) -> Readout:
    g = torch.Generator().manual_seed(seed)
    return Readout(cls_attn={l: torch.rand(batch, 2, N, generator=g) for l in range(DEPTH)})


HPM_ALPHA = Ramp(0.0, 0.5)  # masking.alpha's default, for mix without its own


def _strategy(text: str):
    return parse_strategy(text, DEPTH).with_alpha(HPM_ALPHA)


# -- exact budgets --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["green", "green:1:2", "mix:0.5", "mix:0:1:cosine", "mix:-0.7", "mix:-1", "mix:1",
     "mix@log:1", "sample", "sample:0.01@log", "sample:100"],
)  # fmt: skip
@pytest.mark.parametrize("progress", [0.0, 0.37, 1.0])
def test_every_image_masks_exactly_its_budget(text, progress):
    b = 64
    cfg = MaskingConfig(ratio=(0.0, 0.9), mask_prob=0.7)
    gen = MaskGenerator(parse_strategies([text], 2, DEPTH), cfg, DEPTH)
    plan = gen.plan(b, GRID, torch.Generator().manual_seed(3), progress)
    masks = gen.complete(plan, _readout(2 * b), b, GRID)
    for c, m in enumerate(masks):
        budget = torch.floor(plan.ratio[c] * N + 1e-9).long() * plan.keep[c]
        assert torch.equal(m.flatten(1).sum(1), budget)
        assert torch.equal(plan.counts[c], budget)


# -- mix: its endpoints are random and high, exactly ----------------------------------------
@pytest.mark.parametrize("ratio", [0.3, torch.linspace(0.0, 0.9, 32)])
def test_mix_at_alpha_0_is_random_and_at_1_is_high_exactly(ratio):
    b, readout = 32, _readout(32)
    for mix, plain in (("mix:0", "random"), ("mix:1", "high"), ("mix:-1", "low")):
        a = mask_crop(_strategy(mix), readout, b, GRID, ratio, torch.Generator().manual_seed(5))
        p = mask_crop(_strategy(plain), readout, b, GRID, ratio, torch.Generator().manual_seed(5))
        assert torch.equal(a, p), mix


def test_mix_endpoints_draw_as_their_modes_in_a_whole_plan():
    """The generator stream too: two crops of mix:0 / mix:1 plan exactly as random / high."""
    cfg = MaskingConfig(ratio=(0.1, 0.8), mask_prob=0.6)
    readout = _readout(2 * 20)
    for mix, plain in (("mix:0", "random"), ("mix:1", "high")):
        out = []
        for text in (mix, plain):
            gen = MaskGenerator(parse_strategies(text, 2, DEPTH), cfg, DEPTH)
            plan = gen.plan(20, GRID, torch.Generator().manual_seed(9))
            out.append(torch.stack(gen.complete(plan, readout, 20, GRID)))
        assert torch.equal(*out), mix


def test_mix_schedule_follows_progress():
    """masking.alpha [0, 1] linear: random at the start, high at the end of training."""
    cfg = MaskingConfig(ratio=(0.2, 0.6), mask_prob=1.0, alpha=(0.0, 1.0))
    readout = _readout(2 * 16)
    gen = MaskGenerator(parse_strategies("mix", 2, DEPTH), cfg, DEPTH)
    ref = {t: MaskGenerator(parse_strategies(t, 2, DEPTH), cfg, DEPTH) for t in ("random", "high")}
    for progress, plain in ((0.0, "random"), (1.0, "high")):
        got = gen.generate(readout, 16, GRID, torch.Generator().manual_seed(2), progress=progress)
        want = ref[plain].generate(readout, 16, GRID, torch.Generator().manual_seed(2))
        assert all(torch.equal(x, y) for x, y in zip(got, want, strict=True)), plain


def test_mix_random_part_is_uniform_over_the_unforced_patches():
    """alpha 0.5 at k = 20 of 49: the 10 best patches always, each other one with 10/39."""
    b, draws = 50, 40
    scores = torch.rand(b, N, generator=torch.Generator().manual_seed(0))
    readout = Readout(patch_scores={"pred": scores})
    strategy = _strategy("mix:0.5@pred")
    ratio = 20 / N
    hits = torch.zeros(b, N)
    for i in range(draws):
        m = mask_crop(strategy, readout, b, GRID, ratio, torch.Generator().manual_seed(i))
        hits += m.flatten(1)
    top = scores.topk(10, dim=1).indices
    assert bool((hits.gather(1, top) == draws).all())
    rest = torch.ones(b, N, dtype=torch.bool).scatter_(1, top, False)
    freq = hits[rest].sum() / (rest.sum() * draws)
    assert abs(float(freq) - 10 / 39) < 0.01
    # Every unforced patch of every image was drawn sometimes and left out sometimes.
    assert bool((hits[rest] > 0).all() and (hits[rest] < draws).all())


def _mix_loop_reference(scores, ratio, alpha, keys):
    """mix, image by image, from the same keys: the h best (worst for alpha < 0) patches,
    then the other k - h in decreasing order of the keys among the rest."""
    out = torch.zeros(scores.shape, dtype=torch.bool)
    for b in range(scores.shape[0]):
        k = math.floor(float(ratio[b]) * N + 1e-9)
        h = math.floor(abs(alpha) * k + 1e-9)
        order = sorted(range(N), key=lambda j: -float(scores[b, j]))
        forced = order[:h] if alpha >= 0 else order[N - h :]
        rest = sorted(set(range(N)) - set(forced), key=lambda j: -float(keys[b, j]))
        for j in forced + rest[: k - h]:
            out[b, j] = True
    return out


def _sample_loop_reference(scores, ratio, tau, keys):
    out = torch.zeros(scores.shape, dtype=torch.bool)
    for b in range(scores.shape[0]):
        k = math.floor(float(ratio[b]) * N + 1e-9)
        y = [float(scores[b, j]) / tau - math.log(-math.log(float(keys[b, j]))) for j in range(N)]
        for j in sorted(range(N), key=lambda j: -y[j])[:k]:
            out[b, j] = True
    return out


@pytest.mark.parametrize(
    "text",
    ["mix:0.3", "mix:0.75@log:0", "mix:-0.4", "mix:0", "mix:-1", "sample", "sample:0.02",
     "sample:5@log:1"],
)  # fmt: skip
def test_vectorised_rules_equal_a_per_image_loop_on_the_same_draws(text):
    b = 24
    g = torch.Generator().manual_seed(11)
    ratio = torch.rand(b, generator=g, dtype=torch.float64) * 0.9
    readout = _readout(b, seed=4)
    strategy = _strategy(text)
    plan = plan_crop(strategy, b, GRID, ratio, g)
    got = finish_crop(strategy, plan, readout, GRID).flatten(1)
    scores = strategy.score.compute(readout)
    if strategy.mode == "mix":
        want = _mix_loop_reference(scores, ratio, strategy.options.alpha.start, plan.keys)
    else:
        want = _sample_loop_reference(scores, ratio, strategy.options.tau, plan.keys)
    assert torch.equal(got, want)


# -- HPM's official rule on identical inputs ---------------------------------------------------
def _hpm_generate_mask(loss_pred, mask_ratio, keep_ratio, shuffle):
    """HPM's ``generate_mask`` (models_mae_learn_loss.py, read at Haochen-Wang409/HPM), its
    steps restated: ``len_keep = int(L (1 - r))`` visible patches; the top
    ``int((L - len_keep) keep_ratio)`` by predicted loss masked; the rest of the shuffle order
    is the other patches in a random order (``shuffle``, their np.random.shuffle); the last
    ``L - len_keep`` of that order are masked. 1 = masked."""
    n, length = loss_pred.shape
    len_keep = int(length * (1 - mask_ratio))
    by_loss = torch.argsort(loss_pred, dim=1)  # ascending: the last are the hardest
    len_loss = int((length - len_keep) * keep_ratio)
    ids_shuffle = torch.zeros(n, length, dtype=torch.long)
    for i in range(n):
        if len_loss > 0:
            ids_shuffle[i, -len_loss:] = by_loss[i, -len_loss:]
        chosen = set(ids_shuffle[i, length - len_loss :].tolist()) if len_loss > 0 else set()
        others = shuffle(i, [j for j in range(length) if j not in chosen])
        ids_shuffle[i, : length - len_loss] = torch.tensor(others)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(n, length)
    mask[:, :len_keep] = 0
    return torch.gather(mask, 1, ids_restore).bool()


@pytest.mark.parametrize(
    ("ratio", "keep_ratio"), [(0.75, 0.5), (0.75, 0.0), (0.5, 0.3), (0.25, 1.0)]
)
def test_mix_on_a_loss_prediction_is_hpms_rule(ratio, keep_ratio):
    """Same predicted losses, ratio and alpha, and HPM's shuffle taken from our keys (the
    patches in increasing key order, so that its last ones are our largest keys): the same
    masks. On 8x8 at these ratios HPM's count L - int(L (1 - r)) equals mimkit's floor(r L)
    (elsewhere HPM rounds the count up, mimkit down)."""
    b, grid = 16, 8
    g = torch.Generator().manual_seed(1)
    loss_pred = torch.randn(b, grid * grid, generator=g)
    strategy = _strategy(f"mix:{keep_ratio}@pred")
    plan = plan_crop(strategy, b, grid, ratio, g)
    ours = finish_crop(strategy, plan, Readout(patch_scores={"pred": loss_pred}), grid)

    def shuffle(i, others):
        return sorted(others, key=lambda j: float(plan.keys[i, j]))

    theirs = _hpm_generate_mask(loss_pred, ratio, keep_ratio, shuffle)
    assert torch.equal(ours.flatten(1), theirs)


# -- sample ---------------------------------------------------------------------------------
def test_sample_at_a_tiny_temperature_is_high():
    b, readout = 32, _readout(32, seed=8)
    ratio = torch.linspace(0.0, 0.9, b)
    for tau in ("1e-7", "1e-9"):
        got = mask_crop(_strategy(f"sample:{tau}"), readout, b, GRID, ratio, torch.Generator())
        assert torch.equal(got, mask_crop(_strategy("high"), readout, b, GRID, ratio))


def test_sample_draws_one_patch_with_softmax_probabilities():
    """k = 1: Gumbel-max, P(patch j) = softmax(score / tau)_j."""
    b, tau = 4000, 0.5
    scores = torch.tensor([0.0, 0.5, 1.0, 2.0]).repeat(b, 1)
    strategy = parse_strategy(f"sample:{tau}@pred")
    m = mask_crop(strategy, Readout(patch_scores={"pred": scores}), b, 2, 0.25,
                  torch.Generator().manual_seed(0))  # fmt: skip
    freq = m.flatten(1).float().mean(0)
    want = torch.softmax(scores[0] / tau, 0)
    assert torch.allclose(freq, want, atol=0.025)


def test_gumbel_keys_stay_finite():
    keys = torch.tensor([0.0, 1e-30, 0.5, 1 - 1e-8])
    assert torch.isfinite(gumbel(keys)).all()


# -- green ----------------------------------------------------------------------------------
def test_dog_kernel_has_no_constant_component():
    for s1, s2 in ((0.5, 1.0), (1.0, 2.0)):
        k = dog_kernel(s1, s2)
        assert k.shape[0] == 2 * math.ceil(3 * s2) + 1
        assert abs(float(k.sum())) < 1e-6 and float(k[k.shape[0] // 2, k.shape[0] // 2]) > 0


def test_green_equals_a_per_image_loop_on_the_same_draws():
    b, grid = 6, 5
    ratio = torch.tensor([0.0, 0.2, 0.4, 0.5, 0.7, 0.9], dtype=torch.float64)
    got = green_mask(b, grid, ratio, torch.Generator().manual_seed(2))
    kernel = dog_kernel(0.5, 1.0)
    r = kernel.shape[0] // 2
    white = torch.rand(b, 1, grid + 2 * r, grid + 2 * r, generator=torch.Generator().manual_seed(2))
    for i in range(b):
        values = {}
        for y in range(grid):
            for x in range(grid):
                window = white[i, 0, y : y + 2 * r + 1, x : x + 2 * r + 1] - 0.5
                values[y * grid + x] = float((window * kernel).sum())
        k = math.floor(float(ratio[i]) * grid * grid + 1e-9)
        top = sorted(values, key=lambda j: -values[j])[:k]
        want = torch.zeros(grid * grid, dtype=torch.bool)
        want[top] = True
        assert torch.equal(got[i], want), i


def _band_power(masks: torch.Tensor, lo: float, hi: float) -> float:
    x = masks.float() - masks.float().mean((1, 2), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2).mean(0)
    f = torch.fft.fftfreq(masks.shape[-1])
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    return float(power[(radius >= lo) & (radius < hi)].mean())


def test_green_masks_are_band_pass_and_random_masks_are_white():
    g, grid, b = torch.Generator().manual_seed(0), 14, 600
    green = green_mask(b, grid, 0.5, g).reshape(b, grid, grid)
    rand = random_mask(b, grid * grid, 0.5, g).reshape(b, grid, grid)
    low, mid = (0.01, 0.15), (0.25, 0.45)
    assert _band_power(green, *low) < 0.7 * _band_power(rand, *low)
    assert _band_power(green, *mid) > 1.05 * _band_power(rand, *mid)
    noise = green_noise(b, grid, g)
    assert abs(float(noise.mean())) < 0.01  # zero-mean: the filter passes no constant


# -- schedules ------------------------------------------------------------------------------
def test_ramp_shapes():
    assert Ramp(0.2, 0.2, "constant").at(0.7) == 0.2
    assert Ramp(0.0, 0.5, "linear").at(0.5) == 0.25
    assert Ramp(0.0, 0.5, "linear").at(2.0) == 0.5  # clamped
    cos = Ramp(0.0, 1.0, "cosine")
    assert cos.at(0.0) == 0.0 and abs(cos.at(0.5) - 0.5) < 1e-12 and cos.at(1.0) == 1.0
    assert cos.at(0.1) < 0.1  # flat at the start
    assert Ramp(-1.0, 1.0, "step").at(0.49) == -1.0 and Ramp(-1.0, 1.0, "step").at(0.5) == 1.0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("mix:2", "alpha in 'mix:2' must lie in"),
        ("mix:0:1:wave", "schedule must be one of"),
        ("mix:0.2:0.5:constant", "a constant schedule has one value"),
        ("mix:a", "bad alpha 'a'"),
        ("mix:0:1:linear:3", "mix\\[:A0"),
        ("sample:0", "temperature must be > 0"),
        ("sample:1:2", "sample\\[:TAU\\]"),
        ("green:1", "green\\[:SIGMA1:SIGMA2\\]"),
        ("green:2:1", "0 < SIGMA1 < SIGMA2"),
        ("high:1", "takes no options"),
        ("green@raw", "takes no @SCORE"),
        ("mix@adv", "score 'adv' goes with mode sample or high only"),
        ("sample@pred:1", "score 'pred' takes no arguments"),
    ],
)
def test_bad_family_strings_are_one_line_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_strategy(text)


def test_config_alpha_is_checked():
    with pytest.raises(ConfigError, match="masking.alpha"):
        MaskingConfig(alpha=(0.0, 1.5)).validate()
    with pytest.raises(ConfigError, match="masking.alpha_schedule must be one of"):
        MaskingConfig(alpha_schedule="wave").validate()


def test_labels_round_trip():
    for text in ("mix:0:0.5:cosine@raw:1", "mix:0.3@log:2", "sample:0.5@raw:2", "green:1:2",
                 "sample@adv", "mix@pred"):  # fmt: skip
        s = parse_strategy(text, DEPTH)
        again = parse_strategy(s.label, DEPTH)
        assert (again.mode, again.score, again.options) == (s.mode, s.score, s.options)
