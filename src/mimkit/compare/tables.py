"""``summary.csv`` (one row per strategy x budget x evaluated epoch, every statistic) and
``summary.md``: at the final epoch, one table and one verdict per evaluation (what is and
is not established against the baseline), the mask diagnostics, and the curve by epoch."""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mimkit.compare import stats
from mimkit.compare.aggregate import Comparison, Group
from mimkit.compare.evaluations import Evaluation, Metric, all_metrics
from mimkit.compare.spec import CompareConfig
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
    sd = math.sqrt(sum(c.test.diff.std**2 for c in tested) / len(tested))
    n = Counter(c.test.n for c in tested).most_common(1)[0][0]
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
    m = len(tested)
    sig = [(g, c) for g, c in tested if c.significant]
    rest = [(g, c) for g, c in tested if not c.significant]
    holm = f"at 5% after Holm's correction over {_plural(m, 'comparison')}"
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


def _comparison_section(
    final: Sequence[Group], metric: Metric, baseline: str, multi: bool, table: bool
) -> list[str]:
    """The comparison table of ``metric`` (unless it is already shown), the minimal
    detectable difference and the verdict."""
    text = [comparison_table(final, metric, multi, baseline), ""] if table else []
    line = power_line(final, metric)
    if line:
        text += [line, ""]
    return text + [
        f"**What this shows ({metric.label}):** " + verdict(final, metric, baseline, multi),
        "",
    ]


def summary_markdown(
    cc: CompareConfig,
    groups: Sequence[Group],
    baseline: str,
    plan: Sequence[Evaluation],
    notes: Sequence[str] = (),
) -> str:
    """``groups`` at every evaluated epoch (the final ones make the tables): the headline
    table with the comparison on the grid's k-NN, then one section per evaluation, the mask
    diagnostics and the k-NN curve by epoch."""
    ev = cc.eval
    multi = cc.multi_budget
    final = [g for g in groups if g.final]
    curve, *others = plan
    primary = next(m for m in curve.metrics if m.headline)
    columns = [m for m in curve.metrics if m.tested]
    columns += [m for e in others for m in e.metrics if m.headline]
    epochs = sorted({g.epochs for g in final})
    text = [
        "# Strategy comparison",
        "",
        f"Compare config: `{cc.source}` (base `{cc.base}`).",
        f"Final epoch ({', '.join(map(str, epochs))}); evaluations of the teacher backbone on "
        f"the val split ({'; '.join(e.title for e in plan)}). k-NN: T = "
        f"{ev.knn.temperature}, the pretraining train split as the bank. Values are top-1 % "
        "as mean ± sample std over seeds (no ± with one seed); 95% CI: Student-t interval of "
        f"the mean. Δ: the paired difference from {baseline} over the seeds both ran (a seed "
        "gives every strategy the same initial weights, data order and augmentations: only "
        "the masks differ), with its 95% CI; p: two-sided exact sign-flip permutation test "
        "(up to 10 seeds) or paired t-test; p Holm: corrected across the strategies "
        "compared; significant: p Holm < 0.05.",
        "",
        summary_table(final, columns, multi, primary, baseline),
        "",
    ]
    text += _comparison_section(final, primary, baseline, multi, table=False)
    glance = [primary] + [
        m for e in plan for m in e.metrics if m.headline and m is not primary and m.tested
    ]
    if len(glance) > 1:
        text += [
            "## Every evaluation at a glance",
            "",
            f"Final epoch, top-1 %: mean over seeds (paired Δ vs {baseline} [95% CI]; * "
            "significant after Holm); strategies without results are left out.",
            "",
            glance_table(final, glance, multi),
            "",
        ]
    for evaluation in plan:
        headline = [m for m in evaluation.metrics if m.headline and m is not primary]
        if not headline:
            continue
        text += [f"## {evaluation.title} vs {baseline}", ""]
        for metric in headline:
            if len(headline) > 1:
                text += [f"### {metric.label}", ""]
            text += _comparison_section(final, metric, baseline, multi, table=True)
    estimated = [m for m in all_metrics(list(plan)) if m.evaluation == "diagnostics"]
    if estimated:
        text += [
            "## Mask diagnostics: mean [95% CI] over seeds",
            "",
            "On a fixed batch of val images at the final epoch (definitions: docs/method.md, "
            'section "Mask diagnostics"): the share of masked patches on the object and '
            "its level for random masks of the same counts (empty where the data has no "
            "object rule); hardness, the patch term's cross-entropy on the masked patches "
            "over the same for random masks of the same counts (> 1: harder than random); "
            "IoU with AttMask-High's masks of the same counts and its chance level; the "
            "normalised entropy of the teacher's last-block CLS attention (1: uniform).",
            "",
            estimate_table(final, estimated, multi),
            "",
        ]
    if len({g.epoch for g in groups}) > 1:
        text += [
            f"## {primary.label} by epoch: mean [95% CI]",
            "",
            epoch_table(groups, primary.column, multi),
            "",
        ]
    if notes:
        text += [f"- {n}" for n in notes] + [""]
    return "\n".join(text).rstrip() + "\n"
