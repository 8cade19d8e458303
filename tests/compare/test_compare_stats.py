"""The statistics of ``mimkit compare`` against scipy, brute force and simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from mimkit.compare.aggregate import summarize
from mimkit.compare.stats import (
    detectable_difference,
    holm,
    holm_reachable,
    min_p_value,
    paired_t_power,
    paired_test,
    seeds_needed,
    sign_flip_p,
)


def brute_force_sign_flip(d: list[float]) -> float:
    """Share of the 2^n sign patterns with |mean| at least the observed |mean|."""
    x = np.asarray(d)
    observed = abs(x.mean())
    hits = sum(
        abs((np.asarray(signs) * x).mean()) >= observed * (1 - 1e-9)
        for signs in itertools.product((-1.0, 1.0), repeat=len(x))
    )
    return hits / 2 ** len(x)


@pytest.mark.parametrize(
    "d",
    [
        [0.4, 1.3, -0.2, 0.9, 1.1],
        [2.0, 2.0, 2.0],
        [0.5, -0.5, 1.0, -1.0, 0.25, 3.0, -0.1],
        [1.5, -0.3, 0.8, 0.8, 2.1, -1.2, 0.6, 0.9, 1.7, 0.05],  # 10 seeds: still exact
        [0.0, 0.0, 0.0],
    ],
)
def test_sign_flip_p_is_the_exact_enumeration(d):
    assert sign_flip_p(d) == pytest.approx(brute_force_sign_flip(d), abs=1e-12)


def test_paired_test_on_fixed_numbers():
    strategy = [61.2, 60.1, 62.8, 59.9, 61.5]
    baseline = [60.0, 60.4, 61.0, 58.7, 60.2]
    res = paired_test(strategy, baseline)
    d = np.subtract(strategy, baseline)
    assert res.test == "sign-flip" and res.n == 5
    assert res.p == pytest.approx(brute_force_sign_flip(list(d)))
    assert res.p == pytest.approx(4 / 32)  # 2 of 32 patterns reach |mean| 1.04 on each side
    t = sps.ttest_rel(strategy, baseline)
    ci = t.confidence_interval(0.95)
    assert res.diff.mean == pytest.approx(d.mean())
    assert res.diff.std == pytest.approx(d.std(ddof=1))
    assert (res.diff.low, res.diff.high) == pytest.approx((ci.low, ci.high))


def test_more_than_ten_seeds_use_the_paired_t_test():
    rng = np.random.default_rng(0)
    base = rng.normal(60, 1, 12)
    strategy = base + rng.normal(0.7, 0.8, 12)
    res = paired_test(list(strategy), list(base))
    t = sps.ttest_rel(strategy, base)
    assert res.test == "paired t" and res.p == pytest.approx(t.pvalue)
    ci = t.confidence_interval(0.95)
    assert (res.diff.low, res.diff.high) == pytest.approx((ci.low, ci.high))


def test_one_pair_is_not_tested():
    res = paired_test([61.0], [60.0])
    assert res.test == "n/a" and math.isnan(res.p) and res.diff.mean == 1.0
    assert math.isnan(res.diff.low)


def test_holm_on_fixed_p_values():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 -> max(0.06, 0.04)
    got = holm([0.01, 0.04, 0.03, math.nan, 0.005])
    assert got[:3] + got[4:] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(got[3])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_holm_counts_only_the_tests_that_can_reach_alpha():
    ten, three = min_p_value(10), min_p_value(3)  # 0.002 and 0.25
    p = [0.002, 0.01, 0.25, 0.5, 0.75]
    got = holm_reachable(p, [ten, ten, three, three, three])
    assert got[:2] == pytest.approx([0.004, 0.01])  # Holm over the two 10-seed tests
    assert all(math.isnan(q) for q in got[2:])
    # Equal floors below alpha: plain Holm; none below alpha: all count (none can pass).
    assert holm_reachable(p, [ten] * 5) == pytest.approx(holm(p))
    assert holm_reachable(p[2:], [three] * 3) == pytest.approx(holm(p[2:]))
    with pytest.raises(ValueError, match="floors"):
        holm_reachable(p, [ten])


def test_leaving_out_unreachable_tests_keeps_the_family_wise_error():
    # Under the null, 4 comparisons with 10 seeds and 11 with 3: the chance of any false
    # rejection stays below 5% (sign-flip p of symmetric noise).
    rng = np.random.default_rng(0)
    seeds = [10] * 4 + [3] * 11
    floors = [min_p_value(n) for n in seeds]
    trials, false = 400, 0
    for _ in range(trials):
        ps = [sign_flip_p(list(rng.normal(0, 1, n))) for n in seeds]
        false += any(q < 0.05 for q in holm_reachable(ps, floors) if not math.isnan(q))
    assert false / trials < 0.05 + 2 * math.sqrt(0.05 * 0.95 / trials)


def test_power_matches_a_simulated_paired_t_test():
    sd, n = 1.3, 6
    delta = detectable_difference(sd, n)
    assert paired_t_power(delta, sd, n) == pytest.approx(0.8, abs=1e-6)
    rng = np.random.default_rng(1)
    diffs = rng.normal(delta, sd, size=(40_000, n))
    rejected = sps.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.01)


def test_seeds_needed_is_the_smallest_sufficient_count():
    sd = 1.3
    n = seeds_needed(sd)
    assert n is not None and n > 10
    assert paired_t_power(1.0, sd, n) >= 0.8 > paired_t_power(1.0, sd, n - 1)
    # With little noise the sign-flip test's smallest p-value (2 / 2^n) is the limit: 6 seeds.
    assert min_p_value(5) == pytest.approx(0.0625) and seeds_needed(0.05) == 6
    assert seeds_needed(0.0) is None and math.isnan(detectable_difference(1.0, 1))


def _row(strategy, seed, k10, epoch=2):
    return {"strategy": strategy, "seed": seed, "epochs": 2, "epoch": epoch, "knn_top1_k10": k10}


def test_strategies_compared_with_the_baseline_on_common_seeds():
    rows = [_row("Random", s, v) for s, v in enumerate([60.0, 61.0, 59.0, 60.5, 60.2, 61.1])]
    rows += [_row("High", s, v) for s, v in enumerate([63.0, 64.2, 62.1, 63.4, 62.9, 64.0])]
    rows += [_row("Low", s, v) for s, v in enumerate([60.3, 60.4, 59.9, 60.1])]  # seeds 0-3
    rows += [_row("Once", 0, 70.0), _row("Random", 0, 50.0, epoch=1)]
    order = [("Random", 2), ("High", 2), ("Low", 2), ("Once", 2)]
    groups = summarize(rows, order, [10], linear=False, baseline="Random", every_epoch=True)
    by = {(g.strategy, g.epoch): g for g in groups}
    m = "knn_top1_k10"
    assert by[("Random", 2)].versus == {} and by[("Random", 1)].versus == {}
    high, low, once = (by[(s, 2)].versus[m] for s in ("High", "Low", "Once"))
    assert high.test.n == 6 and low.test.n == 4 and once.test.n == 1
    assert high.test.p == pytest.approx(2 / 64)  # every seed higher
    assert low.test.p == pytest.approx(brute_force_sign_flip([0.3, -0.6, 0.9, -0.4]))
    # Four seeds cannot give p < 0.05 (2 / 2^4 = 0.125): Holm counts High alone, Low is
    # tested but left out, and the one-seed comparison has no p-value at all.
    assert high.reachable and not low.reachable
    assert high.p_holm == pytest.approx(high.test.p) and high.significant is True
    assert math.isnan(low.p_holm) and low.significant is False
    assert once.significant is None and math.isnan(once.p_holm)
    assert high.detectable == pytest.approx(detectable_difference(high.test.diff.std, 6))
    assert ("High", 1) not in by  # High was not evaluated at epoch 1: no row, no test
