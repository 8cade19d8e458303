"""Write a grid's outputs: results.csv, summary.csv, summary.md and the two figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mimkit.compare.aggregate import (
    Group,
    collect_rows,
    curves,
    knn_col,
    result_columns,
    summarize,
    write_results_csv,
)
from mimkit.compare.plots import write_plots
from mimkit.compare.spec import CompareConfig, RunSpec, baseline_strategy
from mimkit.compare.tables import summary_markdown, write_summary_csv


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
    ev = cc.eval
    base = baseline_strategy(cc, baseline)
    rows = collect_rows(runs, ev.knn_ks)
    order = _order(runs)
    masks = {r.strategy.name: describe(r) for r in runs}
    planned: dict[tuple[str, int], int] = {}
    for r in runs:
        planned[(r.strategy.name, r.epochs)] = planned.get((r.strategy.name, r.epochs), 0) + 1
    groups = summarize(
        rows, order, ev.knn_ks, ev.linear, masks, planned, baseline=base, every_epoch=True
    )
    results_csv, summary_csv, summary_md = (
        out / "results.csv",
        out / "summary.csv",
        out / "summary.md",
    )
    write_results_csv(rows, results_csv, result_columns(ev.knn_ks, ev.linear))
    write_summary_csv(groups, summary_csv, ev.knn_ks, ev.linear, base)
    markdown = summary_markdown(cc, groups, base, notes)
    summary_md.write_text(markdown)
    files = [results_csv, summary_csv, summary_md]
    if rows:
        k = ev.shown_k
        label = (lambda s, e: f"{s} ({e} ep)") if cc.multi_budget else (lambda s, e: s)
        panels = [
            (
                f"k-NN top-1 (%), k={k}",
                {label(s, e): pts for (s, e), pts in curves(groups, knn_col(k)).items()},
            )
        ]
        if ev.linear and ev.linear_every:
            panels.append(
                (
                    "linear top-1 (%)",
                    {label(s, e): p for (s, e), p in curves(groups, "linear_top1").items()},
                )
            )
        bars = [(knn_col(k), f"k-NN top-1 (%), k={k}, final epoch")]
        if ev.linear:
            bars.append(("linear_top1", "linear top-1 (%), final epoch"))
        title = cc.description or Path(cc.source).stem.replace("_", " ")
        final = [g for g in groups if g.final]
        files += write_plots(out, final, panels, bars, cc.multi_budget, title)
    return Report(groups=groups, markdown=markdown, files=files, rows=len(rows))
