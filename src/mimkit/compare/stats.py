"""Statistics over seeds, from scipy.stats: Student-t confidence intervals, paired tests
against a baseline (the exact sign-flip permutation test for up to ``EXACT_MAX_SEEDS``
pairs, the paired t-test above), Holm's step-down correction (over the tests whose seeds
can reach significance), and the power of the paired t-test (minimal detectable
difference, seeds needed).

Every function takes plain floats and returns NaN (never a number that means nothing) where
a quantity is undefined, e.g. a standard deviation or a p-value from one seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
EXACT_MAX_SEEDS = 10  # up to 2^10 sign patterns: the exact test is instant


class Estimate(NamedTuple):
    """Mean, sample std (n - 1) and a Student-t confidence interval of the mean."""

    mean: float
    std: float
    n: int
    low: float
    high: float


NAN_ESTIMATE = Estimate(math.nan, math.nan, 0, math.nan, math.nan)


def finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def estimate(values: Sequence[float | None], confidence: float = CONFIDENCE) -> Estimate:
    """Of the finite values; std and interval are NaN with fewer than two."""
    xs = finite(values)
    n = len(xs)
    if n == 0:
        return NAN_ESTIMATE
    mean = float(np.mean(xs))
    if n < 2:
        return Estimate(mean, math.nan, 1, math.nan, math.nan)
    std = float(np.std(xs, ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Estimate(mean, std, n, mean - half, mean + half)


class PairedTest(NamedTuple):
    """A strategy against the baseline on their common seeds: the mean difference (strategy
    minus baseline) with its confidence interval and std over pairs, and the p-value."""

    diff: Estimate
    p: float
    test: str  # "sign-flip", "paired t", or "n/a" (fewer than two pairs)

    @property
    def n(self) -> int:
        return self.diff.n


def sign_flip_p(diffs: Sequence[float]) -> float:
    """Two-sided p-value of the exact sign-flip permutation test of a zero mean difference:
    the share of the 2^n sign patterns whose mean is at least as far from 0 as the observed
    one (scipy's permutation test over every pairing)."""
    d = np.asarray(diffs, dtype=float)
    res = stats.permutation_test(
        (d, np.zeros_like(d)),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        n_resamples=math.inf,
        alternative="two-sided",
        vectorized=True,
    )
    return float(min(1.0, res.pvalue))


def paired_test(values: Sequence[float], baseline: Sequence[float]) -> PairedTest:
    """``values[i]`` and ``baseline[i]`` come from the same seed."""
    if len(values) != len(baseline):
        raise ValueError("paired values need the same length")
    d = [a - b for a, b in zip(values, baseline, strict=True)]
    diff = estimate(d)
    n = diff.n
    if n < 2:
        return PairedTest(diff, math.nan, "n/a")
    if n <= EXACT_MAX_SEEDS:
        return PairedTest(diff, sign_flip_p(d), "sign-flip")
    if diff.std == 0:  # t is infinite (or undefined): scipy would warn and return NaN
        return PairedTest(diff, 1.0 if diff.mean == 0 else 0.0, "paired t")
    return PairedTest(diff, float(stats.ttest_rel(values, baseline).pvalue), "paired t")


def min_p_value(n: int) -> float:
    """The smallest two-sided p-value the test can give with ``n`` pairs: 2 / 2^n for the
    exact sign-flip test, 0 for the t-test."""
    return 2.0 / 2**n if n <= EXACT_MAX_SEEDS else 0.0


def reachable(n: int, alpha: float = ALPHA) -> bool:
    """Whether ``n`` pairs can give a p-value below ``alpha`` at all (6 or more seeds for
    the exact test at 5%)."""
    return min_p_value(n) < alpha


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(idx)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def holm_reachable(
    pvalues: Sequence[float], floors: Sequence[float], alpha: float = ALPHA
) -> list[float]:
    """Holm's adjusted p-values over the tests whose smallest attainable p-value (``floors``:
    fixed by the design, e.g. 2 / 2^n for n seeds) is below ``alpha``; the others, which
    cannot be significant at ``alpha`` whatever the data, are left out of the count and get
    NaN (unless no test can reach ``alpha``: then all count). The family-wise error stays
    at most ``alpha``: the left-out tests can never reject, and Holm controls it over the
    rest (the simplest form of Tarone's 1990 pruning for discrete tests). With equal floors
    this is :func:`holm`."""
    if len(pvalues) != len(floors):
        raise ValueError(f"{len(pvalues)} p-values but {len(floors)} floors")
    # Where none can, all count: nothing is significant, the adjusted values say how far.
    keep = [i for i, f in enumerate(floors) if f < alpha] or list(range(len(floors)))
    adjusted = holm([pvalues[i] for i in keep])
    out = [math.nan] * len(pvalues)
    for i, q in zip(keep, adjusted, strict=True):
        out[i] = q
    return out


def paired_t_power(delta: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test to detect a true mean difference ``delta`` with
    ``n`` pairs whose differences have std ``sd`` (noncentral t)."""
    if n < 2 or not sd > 0:
        return math.nan
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    nc = abs(delta) * math.sqrt(n) / sd
    # The far tail is below alpha / 2 and shrinks with nc; scipy returns NaN for it when it
    # underflows.
    far = float(stats.nct.cdf(-crit, df, nc))
    return float(stats.nct.sf(crit, df, nc)) + (far if math.isfinite(far) else 0.0)


def detectable_difference(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true difference the paired t-test detects with probability ``power``;
    infinite where the exact sign-flip test, used up to ``EXACT_MAX_SEEDS`` seeds, cannot
    give a p-value below ``alpha`` at all."""
    if n < 2 or not (sd > 0 and math.isfinite(sd)):
        return math.nan
    if not reachable(n, alpha):
        return math.inf
    hi = sd
    while paired_t_power(hi, sd, n, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda x: paired_t_power(x, sd, n, alpha) - power, 0.0, hi))


def seeds_needed(
    sd: float,
    delta: float = 1.0,
    power: float = POWER,
    alpha: float = ALPHA,
    limit: int = 10_000,
) -> int | None:
    """The fewest seeds with which a true difference ``delta`` is detected with probability
    ``power``: the paired t-test's power, and for up to ``EXACT_MAX_SEEDS`` seeds also a
    smallest possible sign-flip p-value below ``alpha``. None beyond ``limit``."""
    if not (sd > 0 and math.isfinite(sd)):
        return None

    def enough(n: int) -> bool:  # monotone in n: search by doubling, then bisect
        return reachable(n, alpha) and paired_t_power(delta, sd, n, alpha) >= power

    lo, hi = 1, 2
    while not enough(hi):
        if hi >= limit:
            return None
        lo, hi = hi, min(2 * hi, limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi
