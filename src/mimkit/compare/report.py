"""Write a grid's outputs: results.csv, summary.csv, summary.md, the accuracy figures and
the strategies' masks side by side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mimkit.compare.aggregate import (
    Group,
    collect_rows,
    curves,
    result_columns,
    summarize,
    write_results_csv,
)
from mimkit.compare.evaluations import Evaluation, all_metrics, evaluation_plan
from mimkit.compare.masks_figure import write_masks_figure
from mimkit.compare.plots import write_plots
from mimkit.compare.spec import CompareConfig, RunSpec, baseline_strategy
from mimkit.compare.summary_markdown import summary_markdown
from mimkit.compare.tables import write_summary_csv


@dataclass
class Report:
    groups: list[Group]  # every strategy (x budget) at every evaluated epoch
    markdown: str
    files: list[Path]
    rows: int


def _order(runs: Sequence[RunSpec]) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    for r in runs:
        key = (r.strategy.name, r.epochs)
        if key not in seen:
            seen.append(key)
    return seen


def describe(run: RunSpec) -> str:
    """The run's masks, and the strategy's own overrides (``loss.lambda3=0.5``)."""
    text = " ".join(run.config.masking.strategies)
    extra = [f"{k}={v}" for k, v in run.strategy.overrides if k != "masking.strategies"]
    return text + (f"; {', '.join(extra)}" if extra else "")


def write_report(
    cc: CompareConfig,
    runs: Sequence[RunSpec],
    out: str | Path,
    notes: Sequence[str] = (),
    baseline: str | None = None,
) -> Report:
    """``baseline``: the strategy the others are tested against (default: Random when the
    grid has it, else the first strategy)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = baseline_strategy(cc, baseline)
    plan = evaluation_plan(cc.eval)
    metrics = all_metrics(plan)
    rows = collect_rows(runs, metrics)
    order = _order(runs)
    masks = {r.strategy.name: describe(r) for r in runs}
    planned: dict[tuple[str, int], int] = {}
    for r in runs:
        planned[(r.strategy.name, r.epochs)] = planned.get((r.strategy.name, r.epochs), 0) + 1
    tested = [m.column for m in metrics if m.tested]
    estimated = [m.column for m in metrics if not m.tested]
    groups = summarize(
        rows, order, masks=masks, planned=planned, baseline=base, every_epoch=True,
        columns=tested, estimated=estimated,
    )  # fmt: skip
    results_csv, summary_csv, summary_md = (
        out / "results.csv",
        out / "summary.csv",
        out / "summary.md",
    )
    write_results_csv(rows, results_csv, result_columns(metrics))
    write_summary_csv(groups, summary_csv, metrics, base)
    markdown = summary_markdown(cc, groups, base, plan, notes)
    summary_md.write_text(markdown)
    files = [results_csv, summary_csv, summary_md]
    if rows:
        files += _plots(cc, out, groups, plan, base)
        figure = write_masks_figure(runs, out, _title(cc))
        files += [figure] if figure is not None else []
    return Report(groups=groups, markdown=markdown, files=files, rows=len(rows))


def _plots(
    cc: CompareConfig, out: Path, groups: list[Group], plan: list[Evaluation], baseline: str
) -> list[Path]:
    """Accuracy by epoch (the grid's k-NN, and every other evaluation run at every evaluated
    epoch), the final bars of every headline accuracy and the paired differences from
    ``baseline``."""
    label = (lambda s, e: f"{s} ({e} ep)") if cc.multi_budget else (lambda s, e: s)
    headline = [m for e in plan for m in e.metrics if m.headline]
    curved = [m for e in plan if not e.final_only for m in e.metrics if m.headline]
    panels = [
        (f"{m.label} (%)", {label(s, e): pts for (s, e), pts in curves(groups, m.column).items()})
        for m in curved
    ]
    bars = [(m.column, m.label) for m in headline]
    final = [g for g in groups if g.final]
    return write_plots(out, final, panels, bars, cc.multi_budget, _title(cc), baseline)


def _title(cc: CompareConfig) -> str:
    return cc.description or Path(cc.source).stem.replace("_", " ")
