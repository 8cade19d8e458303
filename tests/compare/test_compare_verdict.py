"""The verdict and power line of ``summary.md`` on constructed comparisons: which strategies
Holm's correction counts, and what the text says of those it leaves out."""

from __future__ import annotations

import numpy as np

from mimkit.compare.aggregate import summarize
from mimkit.compare.evaluations import Metric
from mimkit.compare.stats import Estimate
from mimkit.compare.verdict import association_line, power_line, verdict

METRIC = Metric(column="knn_top1_k10", label="k-NN@10 top-1", evaluation="knn", key="top1_k10")


def _groups(seeds: dict[str, int], shift: dict[str, float]):
    """Random plus strategies with ``seeds[s]`` seeds, ``shift[s]`` points from Random."""
    rng = np.random.default_rng(0)
    base = 70 + rng.normal(0, 1, 10)
    rows = [
        {"strategy": "Random", "seed": s, "epochs": 2, "epoch": 2, METRIC.column: float(v)}
        for s, v in enumerate(base)
    ]
    for name, n in seeds.items():
        noise = rng.normal(0, 0.3, n)
        rows += [
            {
                "strategy": name,
                "seed": s,
                "epochs": 2,
                "epoch": 2,
                METRIC.column: float(base[s] + shift[name] + noise[s]),
            }
            for s in range(n)
        ]
    order = [("Random", 2)] + [(name, 2) for name in seeds]
    return summarize(rows, order, [10], baseline="Random")


def test_strategies_whose_seeds_cannot_reach_five_percent_are_named_not_counted():
    groups = _groups(
        {"High": 10, "Block": 10, "Low": 3, "Noise": 3},
        {
            "High": -2.0,
            "Block": 0.0,
            "Low": -3.0,
            "Noise": 0.5,
        },
    )
    text = verdict(groups, METRIC, "Random", multi=False)
    assert "Holm's correction over 2 comparisons (2 more whose seeds cannot" in text
    assert "Established" in text and "High is below Random by" in text
    assert "Not established: Block" in text
    assert "Too few seeds in common with Random to reach p < 0.05 at all" in text
    assert "Low (-3." in text and "3 seeds" in text and "Noise (+0." in text
    # Low's 3 points are larger than High's 2 but cannot be established with 3 seeds.
    assert "Low is below" not in text
    # The detectable difference is the 10-seed comparisons', not the 3-seed ones'.
    assert "with 10 seeds" in power_line(groups, METRIC)


def test_when_no_strategy_can_reach_five_percent_all_count_and_the_text_says_why():
    groups = _groups({"High": 5, "Low": 5}, {"High": -2.0, "Low": -3.0})
    text = verdict(groups, METRIC, "Random", multi=False)
    assert "over 2 comparisons." in text and "Too few seeds" not in text
    assert "cannot give a p-value below 0.0625 (0.125 after Holm)" in text
    assert "needs at least 7 seeds per strategy" in text
    assert "none with 5 seeds" in power_line(groups, METRIC)


def test_the_diagnostic_that_orders_strategies_as_their_accuracy_does():
    # hardness rises with the difference from Random, entropy falls with it; the one-seed
    # strategy is left out
    shifts = {"A": -3.0, "B": -2.0, "C": -1.0, "D": 1.0, "Once": 5.0}
    seeds = {name: (1 if name == "Once" else 4) for name in shifts}
    groups = _groups(seeds, shifts)
    hard = Metric("diag_hardness", "hardness", "diagnostics", "hardness", tested=False)
    ent = Metric("diag_attention_entropy", "attention entropy", "diagnostics", "x", tested=False)
    order = {"Random": 0.0, **shifts}
    for g in groups:
        g.stats[hard.column] = Estimate(1.0 + 0.1 * order[g.strategy], 0.0, 4, 1.0, 1.0)
        g.stats[ent.column] = Estimate(0.8 - 0.05 * order[g.strategy] ** 3, 0.0, 4, 0.8, 0.8)
    line = association_line(groups, METRIC, [hard, ent], "Random")
    assert "hardness +1.00" in line and "attention entropy -1.00" in line
    assert "5 strategies" in line  # A-D and Random at 0, not "Once"
    assert association_line(groups[:3], METRIC, [hard], "Random") == ""  # too few
