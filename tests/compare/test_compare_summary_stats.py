"""``mimkit compare`` on a tiny grid (2 strategies x 3 seeds, 1 epoch, and a one-seed
strategy): summary.md and summary.csv carry the intervals, the paired differences from the
baseline, the p-values and the significance, consistent with results.csv."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
from compare_fixtures import tiny_compare

from mimkit.cli import main


def _sign_flip(d: list[float]) -> float:
    x = np.asarray(d)
    hits = sum(
        abs((np.asarray(s) * x).mean()) >= abs(x.mean()) * (1 - 1e-9)
        for s in itertools.product((-1.0, 1.0), repeat=len(x))
    )
    return hits / 2 ** len(x)


@pytest.mark.slow
def test_tiny_grid_summary_has_intervals_differences_and_p_values(
    tmp_path: Path, write_compare, capsys
):
    data = tiny_compare(
        seeds=[0, 1, 2],
        epochs=1,
        eval={"knn": {"every": 1, "ks": [5]}, "linear": False, "diagnostics": False},
        strategies=[
            {"name": "AttMask-High", "mask": ["high@raw:-1"]},
            {"name": "Random", "mask": ["random"]},
            {"name": "Block", "mask": ["block"], "seeds": [0]},
        ],
    )
    out = tmp_path / "out"
    assert main(["compare", "--config", str(write_compare(data)), "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out

    summary = (out / "summary.md").read_text()
    assert summary in printed
    table = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in summary.splitlines()
        if line.startswith("| ")
    ]
    head, rows = table[0], {r[0]: dict(zip(table[0], r, strict=True)) for r in table[1:]}
    for column in ("95% CI (k-NN@5)", "Δ vs Random (k-NN@5)", "95% CI of Δ", "p", "p Holm"):
        assert column in head
    assert "significant" in head
    # Random is the default baseline, though listed second
    assert rows["Random"]["Δ vs Random (k-NN@5)"] == "baseline"
    assert rows["AttMask-High"]["significant"] == "no"
    assert rows["Block"]["p"] == rows["Block"]["significant"] == "n/a"  # one seed
    assert rows["Block"]["95% CI (k-NN@5)"] == "n/a"
    assert "What this shows" in summary and "Untested" in summary and "Block" in summary
    assert "Minimal detectable difference" in summary

    with (out / "results.csv").open() as f:
        knn = {(r["strategy"], int(r["seed"])): float(r["knn_top1_k5"]) for r in csv.DictReader(f)}
    with (out / "summary.csv").open() as f:
        srows = {r["strategy"]: r for r in csv.DictReader(f)}
    high, block = srows["AttMask-High"], srows["Block"]
    d = [knn[("AttMask-High", s)] - knn[("Random", s)] for s in (0, 1, 2)]
    assert float(high["knn_top1_k5_diff"]) == pytest.approx(np.mean(d), abs=1e-3)
    assert float(high["knn_top1_k5_p"]) == pytest.approx(_sign_flip(d), abs=1e-4)
    assert high["knn_top1_k5_test"] == "sign-flip" and high["knn_top1_k5_pairs"] == "3"
    assert high["knn_top1_k5_significant"] == "no"  # 3 seeds cannot reach 5% (p >= 0.25)
    lo, hi = float(high["knn_top1_k5_ci_low"]), float(high["knn_top1_k5_ci_high"])
    assert lo < float(high["knn_top1_k5_mean"]) < hi
    assert block["knn_top1_k5_significant"] == "n/a" and block["knn_top1_k5_p"] == ""
    assert block["n_seeds"] == "1" and block["knn_top1_k5_ci_low"] == ""
    assert srows["Random"]["knn_top1_k5_diff"] == "" and srows["Random"]["baseline"] == "Random"


def test_the_final_bars_wrap_to_three_panels_a_row(tmp_path):
    # seven evaluations in one row made a 4,000-pixel strip nobody could read
    from PIL import Image

    from mimkit.compare.plots import BARS_PER_ROW, plot_final_bars
    from mimkit.compare.stats import estimate

    bars = [("Random", estimate([70.0, 71.0])), ("Block", estimate([72.0]))]
    panels = [(f"evaluation {i}", bars) for i in range(7)]
    plot_final_bars(panels, tmp_path / "bars.png")
    with Image.open(tmp_path / "bars.png") as img:
        width, height = img.size
    assert BARS_PER_ROW == 3
    assert width == round((5.2 * 3 + 2.2) * 110)
    assert height == round((0.34 * 2 + 1.6) * 3 * 110)


def test_an_evaluation_without_results_gets_no_panel(tmp_path):
    # fine-tuning before any run had it left an empty seventh panel with 0-1 axes
    from PIL import Image

    from mimkit.compare.plots import plot_final_bars
    from mimkit.compare.stats import estimate

    bars = [("Random", estimate([70.0, 71.0])), ("Block", estimate([72.0]))]
    empty = [("Random", estimate([])), ("Block", estimate([]))]
    panels = [(f"evaluation {i}", bars) for i in range(6)] + [("fine-tune", empty)]
    plot_final_bars(panels, tmp_path / "bars.png")
    with Image.open(tmp_path / "bars.png") as img:
        assert abs(img.size[1] - (0.34 * 2 + 1.6) * 2 * 110) <= 1  # two rows of three, not three


def _comparison(mean: float, low: float, high: float, n: int, p_holm: float):
    from mimkit.compare.aggregate import Comparison
    from mimkit.compare.stats import Estimate, PairedTest

    return Comparison(PairedTest(Estimate(mean, 1.0, n, low, high), p_holm, "sign-flip"), p_holm)


def test_paired_differences_keep_tested_strategies_only(tmp_path):
    # the per-strategy intervals of the bars overlap where the paired ones do not: the
    # difference figure shows what the tests see, and only what they tested
    from PIL import Image

    from mimkit.compare.plots import delta_rows, plot_paired_differences

    comparisons = [
        ("Block", _comparison(0.3, -0.2, 0.8, 8, 0.2)),
        ("High", _comparison(-1.7, -2.4, -1.0, 8, 0.03)),
        ("Low", _comparison(-0.5, float("nan"), float("nan"), 1, float("nan"))),  # one pair
    ]
    rows = delta_rows(comparisons)
    assert [(r.label, r.significant) for r in rows] == [("High", True), ("Block", False)]
    assert rows[0].low == -2.4 and rows[0].high == -1.0 and rows[0].n == 8
    path = tmp_path / "delta.png"
    assert plot_paired_differences([("k-NN", comparisons)] * 4, path, "Random")
    with Image.open(path) as img:
        width, height = img.size  # two rows of three panels, two strategies each
    assert width == round((5.2 * 3 + 2.2) * 110)
    assert abs(height - (0.34 * 2 + 1.6) * 2 * 110) <= 1
    untested = tmp_path / "none.png"
    assert not plot_paired_differences([("k-NN", comparisons[2:])], untested, "Random")
    assert not untested.exists()


def test_too_few_seeds_to_test_do_not_set_the_difference_axis():
    # A 2-seed interval (t with one degree of freedom) spans tens of points; the panel's
    # extent comes from the 10-seed intervals, every mean and zero, the 2-seed one is cut.
    from mimkit.compare.plots import delta_extent, delta_rows

    comparisons = [
        ("Block", _comparison(0.6, 0.0, 1.1, 10, 0.05)),
        ("High", _comparison(-1.7, -2.5, -1.0, 10, 0.008)),
        ("Low", _comparison(-3.4, -18.2, 11.7, 2, 0.5)),
    ]
    rows = delta_rows(comparisons)
    assert [r.reachable for r in rows] == [False, True, True]  # sorted: Low, High, Block
    assert delta_extent(rows) == (-3.4, 1.1)  # Low's mean, Block's upper end
    # where no comparison can reach 5% (5 seeds each), every interval counts
    five = [
        ("Block", _comparison(0.1, -0.5, 0.7, 5, 0.5)),
        ("High", _comparison(-0.6, -1.5, 0.2, 5, 0.5)),
    ]
    assert delta_extent(delta_rows(five)) == (-1.5, 0.7)
