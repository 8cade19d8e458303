"""``summary.csv`` (one row per strategy x budget x evaluated epoch, every statistic) and the
markdown tables of ``summary.md`` (:mod:`mimkit.compare.summary_markdown` puts them together)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mimkit.compare.aggregate import Comparison, Group
from mimkit.compare.evaluations import Metric
from mimkit.compare.stats import Estimate

NA = "n/a"
ESTIMATE_FIELDS = ("mean", "std", "ci_low", "ci_high")


# -- formatting -------------------------------------------------------------------------
def _num(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else round(v, 4)
    return "" if v is None else v


def fmt_mean_std(est: Estimate, digits: int = 1) -> str:
    if est.n == 0:
        return "–"
    if est.n < 2:
        return f"{est.mean:.{digits}f}"
    return f"{est.mean:.{digits}f} ± {est.std:.{digits}f}"


def fmt_interval(low: float, high: float, signed: bool = False) -> str:
    if math.isnan(low):
        return NA
    f = "+.1f" if signed else ".1f"
    return f"[{low:{f}}, {high:{f}}]"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return NA
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def significance(c: Comparison | None) -> str:
    if c is None:
        return ""
    sig = c.significant
    return NA if sig is None else ("yes" if sig else "no")


def comparison_cells(g: Group, metric: str) -> list[str]:
    """95% CI, Δ, its CI, p, p Holm, significant: the table cells of ``g`` on ``metric``."""
    est = g.stats[metric]
    ci = fmt_interval(est.low, est.high)
    c = g.versus.get(metric)
    if c is None:
        return [ci, "baseline" if est.n else "–", "", "", "", ""]
    d = c.test.diff
    if d.n == 0:
        return [ci, "–", NA, NA, NA, NA]
    delta = f"{d.mean:+.1f}" + (f" (n={d.n})" if d.n != est.n else "")
    return [
        ci,
        delta,
        fmt_interval(d.low, d.high, True),
        fmt_p(c.test.p),
        fmt_p(c.p_holm),
        significance(c),
    ]


# -- summary.csv ------------------------------------------------------------------------
STAT_FIELDS = (
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "pairs",
    "test",
    "p",
    "p_holm",
    "significant",
    "detectable_80",
    "seeds_for_1pt",
)


def summary_columns(metrics: Sequence[Metric]) -> list[str]:
    cols = ["strategy", "mask", "epochs", "epoch", "n_seeds", "seeds", "baseline"]
    for m in metrics:
        cols += [f"{m.column}_{f}" for f in (STAT_FIELDS if m.tested else ESTIMATE_FIELDS)]
    return cols + ["images_per_s_mean"]


def _metric_fields(g: Group, column: str) -> dict[str, Any]:
    est = g.stats[column]
    out: dict[str, Any] = {
        "mean": est.mean,
        "std": est.std,
        "ci_low": est.low,
        "ci_high": est.high,
    }
    c = g.versus.get(column)
    if c is not None:
        d = c.test.diff
        out.update(
            diff=d.mean,
            diff_ci_low=d.low,
            diff_ci_high=d.high,
            pairs=d.n,
            test=c.test.test,
            p=c.test.p,
            p_holm=c.p_holm,
            significant=significance(c),
            detectable_80=c.detectable,
            seeds_for_1pt=c.seeds_for_1pt,
        )
    return out


def write_summary_csv(
    groups: Sequence[Group], path: Path, metrics: Sequence[Metric], baseline: str
) -> None:
    cols = summary_columns(metrics)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for g in groups:
            row: dict[str, Any] = {
                "strategy": g.strategy,
                "mask": g.mask,
                "epochs": g.epochs,
                "epoch": g.epoch,
                "n_seeds": len(g.seeds),
                "seeds": " ".join(str(s) for s in g.seeds),
                "baseline": baseline,
                "images_per_s_mean": g.stats["images_per_s"].mean,
            }
            for m in metrics:
                row.update({f"{m.column}_{k}": v for k, v in _metric_fields(g, m.column).items()})
            w.writerow([_num(row.get(c)) for c in cols])


# -- summary.md -------------------------------------------------------------------------
def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _seeds_cell(g: Group) -> str:
    seeds = str(len(g.seeds))
    if g.planned_seeds and g.planned_seeds != len(g.seeds):
        seeds += f" of {g.planned_seeds}"
    return seeds


def _mask_cell(g: Group) -> str:
    mask, _, extra = g.mask.partition("; ")
    return (f"`{mask}`" if mask else "") + (f" + {extra}" if extra else "")


def summary_table(
    groups: Sequence[Group],
    columns: Sequence[Metric],
    multi: bool,
    tested: Metric | None = None,
    baseline: str = "",
) -> str:
    """Final-epoch rows: mean ± std per metric of ``columns``, and for ``tested`` the
    interval and the comparison with ``baseline``."""
    head = ["strategy", "mask", "seeds", *(m.label for m in columns)]
    if tested:
        on = f" ({tested.short})"
        head += [f"95% CI{on}", f"Δ vs {baseline}{on}", "95% CI of Δ", "p", "p Holm"]
        head.append("significant")
    head.append("img/s")
    rows = []
    for g in groups:
        cells = [g.label(multi), _mask_cell(g), _seeds_cell(g)]
        cells += [fmt_mean_std(g.stats[m.column]) for m in columns]
        if tested:
            cells += comparison_cells(g, tested.column)
        ips = g.stats["images_per_s"].mean
        cells.append("–" if math.isnan(ips) else f"{ips:.0f}")
        rows.append(cells)
    return _table(head, rows)


def comparison_table(groups: Sequence[Group], metric: Metric, multi: bool, baseline: str) -> str:
    head = ["strategy", "seeds", metric.label, "95% CI", f"Δ vs {baseline}"]
    head += ["95% CI of Δ", "p", "p Holm", "significant"]
    rows = [  # seeds: those with this metric (fine-tuning may run on a few)
        [g.label(multi), str(g.stats[metric.column].n), fmt_mean_std(g.stats[metric.column])]
        + comparison_cells(g, metric.column)
        for g in groups
    ]
    return _table(head, rows)


def _estimate_cell(est: Estimate, digits: int) -> str:
    if est.n == 0:
        return "–"
    cell = f"{est.mean:.{digits}f}"
    return cell + (f" [{est.low:.{digits}f}, {est.high:.{digits}f}]" if est.n >= 2 else "")


def estimate_table(groups: Sequence[Group], metrics: Sequence[Metric], multi: bool) -> str:
    """Mean [95% CI] over seeds per strategy of each of ``metrics`` (no test)."""
    head = ["strategy", "seeds", *(m.label for m in metrics)]
    rows = [
        [g.label(multi), str(g.stats[metrics[0].column].n)]
        + [_estimate_cell(g.stats[m.column], 3) for m in metrics]
        for g in groups
    ]
    return _table(head, rows)


def _glance_cell(g: Group, metric: str) -> str:
    """``mean (Δ [CI])``, ``*`` when significant after Holm, ``n=K`` when the evaluation has
    fewer seeds than the strategy; the baseline's mean alone."""
    est = g.stats[metric]
    if est.n == 0:
        return "–"
    seeds = [f"n={est.n}"] if est.n != len(g.seeds) else []
    c = g.versus.get(metric)
    if c is None or c.test.diff.n == 0:
        return f"{est.mean:.1f}" + (f" ({seeds[0]})" if seeds else "")
    d = c.test.diff
    delta = f"{d.mean:+.1f}" + (f" {fmt_interval(d.low, d.high, True)}" if d.n >= 2 else "")
    star = "*" if d.n >= 2 and c.significant else ""
    return f"{est.mean:.1f} ({', '.join([delta, *seeds])}){star}"


def glance_table(groups: Sequence[Group], metrics: Sequence[Metric], multi: bool) -> str:
    """Every evaluation side by side: per strategy and evaluation the mean, and the paired
    difference from the baseline with its 95% CI (``*``: significant after Holm)."""
    head = ["strategy", "seeds", *(m.short for m in metrics)]
    rows = [
        [g.label(multi), _seeds_cell(g)] + [_glance_cell(g, m.column) for m in metrics]
        for g in groups
        if any(g.stats[m.column].n for m in metrics)
    ]
    return _table(head, rows)


def epoch_table(groups: Sequence[Group], column: str, multi: bool) -> str:
    """Mean [95% CI] per strategy and evaluated epoch."""
    epochs = sorted({g.epoch for g in groups})
    rows: dict[str, dict[int, str]] = {}
    for g in groups:
        rows.setdefault(g.label(multi), {})[g.epoch] = _estimate_cell(g.stats[column], 1)
    return _table(
        ["strategy"] + [f"epoch {e}" for e in epochs],
        [[label] + [r.get(e, "") for e in epochs] for label, r in rows.items()],
    )
