"""``summary.md``: at the final epoch, one table and one verdict per evaluation (what is and
is not established against the baseline), the mask diagnostics, and the curve by epoch."""

from __future__ import annotations

from collections.abc import Sequence

from mimkit.compare.aggregate import Group
from mimkit.compare.evaluations import Evaluation, Metric, all_metrics
from mimkit.compare.spec import CompareConfig
from mimkit.compare.tables import (
    comparison_table,
    epoch_table,
    estimate_table,
    glance_table,
    summary_table,
)
from mimkit.compare.verdict import association_line, power_line, verdict


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
        "compared whose seeds can reach p < 0.05 (n/a for the others: with n seeds the "
        "exact test's p is at least 2 / 2^n); significant: p Holm < 0.05.",
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
        told = [m for m in estimated if not m.key.endswith("_chance")]
        line = association_line(final, primary, told, baseline)
        text += [line, ""] if line else []
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
