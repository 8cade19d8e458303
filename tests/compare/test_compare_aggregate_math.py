"""Mean, std, intervals and comparisons over seeds on a hand-built results table."""

from __future__ import annotations

import math

import pytest

from mimkit.compare.aggregate import curves, rows_from_record, summarize
from mimkit.compare.evaluations import Metric
from mimkit.compare.record import RunRecord
from mimkit.compare.stats import estimate
from mimkit.compare.tables import fmt_mean_std, summary_table

KNN10 = Metric("knn_top1_k10", "k-NN@10 top-1", "knn:cls", "top1_k10")
KNN10_TOP5 = Metric("knn_top5_k10", "k-NN@10 top-5", "knn:cls", "top5_k10", tested=False)
LINEAR = Metric("linear_top1", "linear top-1", "linear", "top1")


def _row(strategy, seed, epoch, k10, lin=None, epochs=3, ips=100.0):
    return {
        "strategy": strategy,
        "run": f"{strategy}-s{seed}",
        "seed": seed,
        "epochs": epochs,
        "epoch": epoch,
        "knn_top1_k10": k10,
        "linear_top1": lin,
        "images_per_s": ips,
    }


ROWS = [
    _row("A", 0, 1, 10.0),
    _row("A", 1, 1, 20.0),
    _row("A", 0, 3, 50.0, 60.0, ips=90.0),
    _row("A", 1, 3, 54.0, 64.0, ips=110.0),
    _row("A", 2, 3, 58.0, 62.0, ips=100.0),
    _row("B", 0, 3, 40.0, 45.0),
    _row("C", 0, 1, 30.0),  # never reached its final epoch
]


def test_estimate_is_sample_std_and_student_t_interval():
    m, s, n, lo, hi = estimate([50.0, 54.0, 58.0])
    assert (m, n) == (54.0, 3) and s == pytest.approx(4.0)
    # t(0.975, 2) = 4.302653: 54 ± 4.302653 * 4 / sqrt(3)
    assert (lo, hi) == pytest.approx((54 - 9.936551, 54 + 9.936551), abs=1e-5)
    m, s, n, lo, hi = estimate([7.0])
    assert m == 7.0 and math.isnan(s) and n == 1 and math.isnan(lo) and math.isnan(hi)
    m, s, n, lo, hi = estimate([None, float("nan")])
    assert math.isnan(m) and n == 0


def test_summary_uses_the_final_epoch_of_each_seed():
    groups = summarize(ROWS, [("A", 3), ("B", 3), ("C", 3)], [10], linear=True)
    a, b, c = groups
    assert a.seeds == [0, 1, 2] and a.epoch == 3 and a.final
    assert a.stats["knn_top1_k10"][:2] == pytest.approx((54.0, 4.0))
    assert a.stats["linear_top1"][:2] == pytest.approx((62.0, 2.0))
    assert a.stats["images_per_s"].mean == pytest.approx(100.0)
    assert b.stats["knn_top1_k10"].mean == 40.0 and math.isnan(b.stats["knn_top1_k10"].std)
    assert c.seeds == [] and c.stats["knn_top1_k10"].n == 0
    table = summary_table(groups, [KNN10, LINEAR], multi=False)
    assert "| A |  | 3 | 54.0 ± 4.0 | 62.0 ± 2.0 | 100 |" in table
    assert "| B |  | 1 | 40.0 | 45.0 | 100 |" in table
    assert fmt_mean_std(estimate([])) == "–"


def test_curves_mean_and_std_per_epoch():
    groups = summarize(ROWS, [("A", 3), ("C", 3)], [10], linear=False, every_epoch=True)
    assert [(g.strategy, g.epoch) for g in groups] == [("A", 1), ("A", 3), ("C", 1), ("C", 3)]
    lines = curves(groups, "knn_top1_k10")
    assert [e for e, _ in lines[("C", 3)]] == [1]  # no point where no seed reached it
    (e1, s1), (e3, s3) = lines[("A", 3)]
    assert (e1, e3) == (1, 3)
    assert s1.mean == pytest.approx(15.0) and s1.std == pytest.approx(math.sqrt(50.0))
    assert s1.n == 2 and s3[:3] == pytest.approx((54.0, 4.0, 3))


def test_rows_from_a_first_layout_eval_json():
    # The layout of the first grids: their results are read, not computed again.
    state = {
        "run": "a-s1",
        "strategy": "A",
        "seed": 1,
        "epochs": 2,
        "eval_key": {
            "every": 1,
            "knn_ks": [10],
            "temperature": 0.07,
            "features": "cls",
            "linear": True,
            "linear_epochs": 100,
            "linear_batch_size": 256,
            "linear_lr": None,
            "linear_features": "last4",
            "linear_every": False,
        },
        "epochs_eval": {
            "2": {
                "knn": {"10": {"top1": 70.0, "top5": 90.0}},
                "linear": {"top1": 75.0},
                "loss": 3.0,
                "images_per_s": 50.0,
            },
            "1": {"knn": {"10": {"top1": 60.0, "top5": 85.0}}},
        },
    }
    record = RunRecord.from_dict(state)
    rows = rows_from_record(record, "A", "a-s1", [KNN10, KNN10_TOP5, LINEAR])
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["knn_top1_k10"] == 70.0 and rows[1]["linear_top1"] == 75.0
    assert rows[0]["linear_top1"] is None and rows[0]["knn_top5_k10"] == 85.0
    assert rows[1]["loss"] == 3.0 and rows[1]["images_per_s"] == 50.0
    # The settings the first layout recorded are those of the same eval: section today.
    from mimkit.compare.settings import EvalSettings

    ev = EvalSettings.from_yaml({"knn": {"ks": [10]}, "linear": True})
    final = record.epochs_eval[2]
    assert final.has("knn:cls", ev.knn.settings_key())
    assert final.has("linear", ev.linear.settings_key())
    assert not final.has("linear", {**ev.linear.settings_key(), "epochs": 5})
    # Written in today's layout, it reads back the same.
    assert RunRecord.from_dict(record.to_dict()) == record


def test_summary_table_shows_strategy_overrides():
    groups = summarize(ROWS, [("B", 3)], [10], linear=False, masks={"B": "high; loss.lambda3=0.5"})
    assert "| B | `high` + loss.lambda3=0.5 | 1 | 40.0 | 100 |" in summary_table(
        groups, [KNN10], multi=False
    )
