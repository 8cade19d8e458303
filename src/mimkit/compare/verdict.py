"""What a comparison on one metric does and does not establish against the baseline, in
words: the verdict and the minimal detectable difference of ``summary.md``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import spearmanr

from mimkit.compare import stats
from mimkit.compare.aggregate import Comparison, Group
from mimkit.compare.evaluations import Metric
from mimkit.compare.tables import fmt_p


def _tested(groups: Sequence[Group], column: str) -> list[tuple[Group, Comparison]]:
    return [
        (g, g.versus[column])
        for g in groups
        if column in g.versus and g.versus[column].significant is not None
    ]


def power_line(groups: Sequence[Group], metric: Metric) -> str:
    """The minimal detectable difference at 80% power, from the paired std pooled over the
    comparisons, and the seeds a 1-point difference needs."""
    tested = [c for _, c in _tested(groups, metric.column) if c.test.diff.std > 0]
    if not tested:
        return ""
    # The difference the best-seeded comparisons detect, from their own paired std (the
    # others are named by the verdict as too few to test).
    n = max(c.test.n for c in tested)
    tested = [c for c in tested if c.test.n == n]
    sd = math.sqrt(sum(c.test.diff.std**2 for c in tested) / len(tested))
    mdd = stats.detectable_difference(sd, n)
    need = stats.seeds_needed(sd)
    needs = f"{need} seeds" if need else "more than 10,000 seeds"
    found = (
        f"{mdd:.1f} points with {n} seeds"
        if math.isfinite(mdd)
        else f"none with {n} seeds (the exact test cannot reach p < 0.05 with so few)"
    )
    return (
        f"Minimal detectable difference ({metric.label}; 80% power, two-sided 5%, "
        f"paired t-test on the observed paired std of {sd:.2f} points pooled over "
        f"{_plural(len(tested), 'comparison')}): {found}; detecting a 1-point difference "
        f"needs {needs} (per strategy in summary.csv)."
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _seeds_for_floor(m: int) -> int:
    """Fewest seeds with which the smallest sign-flip p-value survives Holm over ``m``."""
    n = 2
    while m * stats.min_p_value(n) >= stats.ALPHA:
        n += 1
    return n


def verdict(groups: Sequence[Group], metric: Metric, baseline: str, multi: bool) -> str:
    """What the final-epoch comparison on ``metric`` does and does not establish."""
    column = metric.column
    compared = [g for g in groups if column in g.versus]
    if not compared:
        return f"Nothing is compared: the baseline {baseline} has no result at this epoch."
    tested = _tested(groups, column)
    if not tested:
        return (
            f"No difference from {baseline} can be tested: no strategy has two or more seeds "
            f"in common with it, and one seed is a single draw of the seed noise. Run at "
            f"least {_seeds_for_floor(1)} seeds per strategy to test anything."
        )
    # Holm counts the comparisons whose seeds can reach 5%; where none can, all of them.
    family = [(g, c) for g, c in tested if c.reachable] or tested
    short = [(g, c) for g, c in tested if not c.reachable] if family is not tested else []
    m = len(family)
    sig = [(g, c) for g, c in family if c.significant]
    rest = [(g, c) for g, c in family if not c.significant]
    holm = f"at 5% after Holm's correction over {_plural(m, 'comparison')}"
    if short:
        holm += f" ({len(short)} more whose seeds cannot reach p < 0.05 left out of it)"
    parts = []
    if sig:
        parts.append(
            f"Established {holm}: "
            + "; ".join(
                f"{g.label(multi)} is {'above' if c.test.diff.mean > 0 else 'below'} {baseline}"
                f" by {abs(c.test.diff.mean):.1f} points (95% CI of the difference "
                f"{c.test.diff.low:+.1f} to {c.test.diff.high:+.1f}, p Holm {fmt_p(c.p_holm)})"
                for g, c in sig
            )
            + "."
        )
    else:
        parts.append(f"No difference from {baseline} is established {holm}.")
    if rest:
        parts.append(
            "Not established: "
            + ", ".join(f"{g.label(multi)} ({c.test.diff.mean:+.1f})" for g, c in rest)
            + f" {'differs' if len(rest) == 1 else 'differ'} from {baseline} by no more than "
            "seed noise explains; that does not show equality: differences below the "
            "minimal detectable difference mostly go unseen."
        )
    if short:
        parts.append(
            f"Too few seeds in common with {baseline} to reach p < 0.05 at all (the exact "
            "test's smallest p-value is 2 / 2^n): "
            + ", ".join(
                f"{g.label(multi)} ({c.test.diff.mean:+.1f} [{c.test.diff.low:+.1f}, "
                f"{c.test.diff.high:+.1f}], {c.test.n} seeds)"
                for g, c in short
            )
            + "; their intervals are estimates, not tests."
        )
    untested = [g.label(multi) for g in compared if g.versus[column].significant is None]
    if untested:
        parts.append(
            f"Untested (fewer than two seeds in common with {baseline}): "
            + ", ".join(untested)
            + "."
        )
    n = max(c.test.n for _, c in tested)
    floor = stats.min_p_value(n)
    if min(1.0, m * floor) >= stats.ALPHA:
        parts.append(
            f"With {n} seeds the exact sign-flip test cannot give a p-value below "
            f"{fmt_p(floor)}"
            + (f" ({fmt_p(min(1.0, m * floor))} after Holm)" if m > 1 else "")
            + ": no difference can be significant here, whatever its size; that needs at "
            f"least {_seeds_for_floor(m)} seeds per strategy."
        )
    parts.append(f"Only differences from {baseline} are tested, not the order of the others.")
    return " ".join(parts)


def association_line(
    groups: Sequence[Group], metric: Metric, diagnostics: Sequence[Metric], baseline: str
) -> str:
    """Across strategies, Spearman's rank correlation of each diagnostic (its mean over seeds)
    with the mean paired difference from ``baseline`` on ``metric``: the strategies with two
    or more seeds in common with the baseline, and the baseline itself at 0. Empty with
    fewer than four such strategies. Exploratory: it says which diagnostic orders the
    strategies as their accuracy does, not why."""
    points: list[tuple[Group, float]] = []
    for g in groups:
        c = g.versus.get(metric.column)
        if g.strategy == baseline and not g.versus:
            points.append((g, 0.0))
        elif c is not None and c.test.n >= 2:
            points.append((g, c.test.diff.mean))
    parts = []
    for d in diagnostics:
        pairs = [(g.stats[d.column].mean, delta) for g, delta in points if d.column in g.stats]
        pairs = [(x, y) for x, y in pairs if math.isfinite(x)]
        if len(pairs) < 4 or min(len({x for x, _ in pairs}), len({y for _, y in pairs})) < 2:
            continue
        res = spearmanr([x for x, _ in pairs], [y for _, y in pairs])
        parts.append(
            f"{d.label} {float(res.statistic):+.2f} (p {fmt_p(float(res.pvalue))}, "
            f"{len(pairs)} strategies)"
        )
    if not parts:
        return ""
    return (
        f"Across strategies (exploratory): Spearman's rank correlation of each diagnostic's "
        f"mean with the mean paired difference from {baseline} on {metric.label} ("
        f"strategies with two or more seeds in common with {baseline}, and {baseline} at 0): "
        + "; ".join(parts)
        + ". A correlation across strategies names a diagnostic that orders them as their "
        "accuracy does; it does not show cause, and each mean carries its own seed noise."
    )
