"""Tables from a grid's ``eval.json`` files: one row per run x evaluated epoch
(``results.csv``), and per strategy the mean ± std over seeds at the final epoch
(``summary.csv``, ``summary.md``).

The std is the sample standard deviation (n - 1 in the denominator); with one seed it is
undefined (NaN in the CSV, left out of the Markdown).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimkit.compare.runner import read_eval
from mimkit.compare.spec import CompareConfig, RunSpec


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """``(mean, sample std, n)`` of the finite values; NaN where undefined."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(xs) / n
    if n < 2:
        return mean, math.nan, n
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, math.sqrt(var), n


def knn_col(k: int, which: str = "top1") -> str:
    return f"knn_{which}_k{k}"


def result_columns(ks: Sequence[int], linear: bool) -> list[str]:
    cols = ["strategy", "run", "seed", "epochs", "epoch"]
    for k in ks:
        cols += [knn_col(k), knn_col(k, "top5")]
    if linear:
        cols += ["linear_top1", "linear_top5"]
    return cols + ["loss", "images_per_s", "run_images_per_s"]


def collect_rows(runs: Sequence[RunSpec], ks: Sequence[int]) -> list[dict[str, Any]]:
    """One row per run x evaluated epoch, from the runs' eval.json files."""
    rows = []
    for run in runs:
        state = read_eval(run.out)
        rows.extend(rows_from_state(state, run.strategy.name, run.name, ks))
    return rows


def rows_from_state(
    state: dict[str, Any], strategy: str, run: str, ks: Sequence[int]
) -> list[dict[str, Any]]:
    rows = []
    for epoch in sorted(state.get("epochs_eval", {}), key=int):
        e = state["epochs_eval"][epoch]
        row: dict[str, Any] = {
            "strategy": strategy,
            "run": run,
            "seed": state.get("seed"),
            "epochs": state.get("epochs"),
            "epoch": int(epoch),
        }
        for k in ks:
            r = e.get("knn", {}).get(str(k), {})
            row[knn_col(k)] = r.get("top1")
            row[knn_col(k, "top5")] = r.get("top5")
        lin = e.get("linear")
        if lin:
            row["linear_top1"] = lin.get("top1")
            row["linear_top5"] = lin.get("top5")
        row["loss"] = e.get("loss")
        row["images_per_s"] = e.get("images_per_s")  # that epoch's training speed
        row["run_images_per_s"] = state.get("images_per_s")  # mean over the run's epochs
        rows.append(row)
    return rows


@dataclass
class Group:
    """One strategy at one epoch budget."""

    strategy: str
    mask: str
    epochs: int
    seeds: list[int] = field(default_factory=list)  # seeds with a final-epoch result
    stats: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    planned_seeds: int = 0

    def label(self, multi_budget: bool) -> str:
        return f"{self.strategy} ({self.epochs} ep)" if multi_budget else self.strategy


def summarize(
    rows: Sequence[dict[str, Any]],
    order: Sequence[tuple[str, int]],
    ks: Sequence[int],
    linear: bool,
    masks: dict[str, str] | None = None,
    planned: dict[tuple[str, int], int] | None = None,
) -> list[Group]:
    """Per (strategy, budget), in ``order``: mean ± std over seeds at the final epoch."""
    metrics = [knn_col(k) for k in ks] + (["linear_top1"] if linear else [])
    groups = []
    for strategy, epochs in order:
        final = [
            r
            for r in rows
            if r["strategy"] == strategy and r["epochs"] == epochs and r["epoch"] == epochs
        ]
        g = Group(
            strategy=strategy,
            mask=(masks or {}).get(strategy, ""),
            epochs=epochs,
            seeds=sorted(r["seed"] for r in final),
            planned_seeds=(planned or {}).get((strategy, epochs), 0),
        )
        for m in metrics:
            g.stats[m] = mean_std(r.get(m) for r in final)
        # Training speed: each run's mean over its epochs (one epoch's value is noisy).
        g.stats["images_per_s"] = mean_std(
            r["run_images_per_s"]
            if r.get("run_images_per_s") is not None
            else r.get("images_per_s")
            for r in final
        )
        groups.append(g)
    return groups


def curves(
    rows: Sequence[dict[str, Any]], order: Sequence[tuple[str, int]], metric: str
) -> dict[tuple[str, int], list[tuple[int, float, float, int]]]:
    """Per (strategy, budget): ``[(epoch, mean, std, n)]`` over seeds, by epoch."""
    out = {}
    for strategy, epochs in order:
        sel = [r for r in rows if r["strategy"] == strategy and r["epochs"] == epochs]
        pts = []
        for e in sorted({r["epoch"] for r in sel}):
            m, s, n = mean_std(r.get(metric) for r in sel if r["epoch"] == e)
            if n:
                pts.append((e, m, s, n))
        out[(strategy, epochs)] = pts
    return out


def _num(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else round(v, 4)
    return "" if v is None else v


def write_results_csv(rows: Sequence[dict[str, Any]], path: Path, columns: Sequence[str]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_num(r.get(c)) for c in columns])


def summary_columns(ks: Sequence[int], linear: bool) -> list[str]:
    cols = ["strategy", "mask", "epochs", "n_seeds", "seeds"]
    for m in [knn_col(k) for k in ks] + (["linear_top1"] if linear else []):
        cols += [f"{m}_mean", f"{m}_std"]
    return cols + ["images_per_s_mean"]


def write_summary_csv(groups: Sequence[Group], path: Path, ks: Sequence[int], linear: bool) -> None:
    cols = summary_columns(ks, linear)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for g in groups:
            row: dict[str, Any] = {
                "strategy": g.strategy,
                "mask": g.mask,
                "epochs": g.epochs,
                "n_seeds": len(g.seeds),
                "seeds": " ".join(str(s) for s in g.seeds),
                "images_per_s_mean": g.stats["images_per_s"][0],
            }
            for m, (mean, std, _) in g.stats.items():
                row[f"{m}_mean"], row[f"{m}_std"] = mean, std
            w.writerow([_num(row.get(c)) for c in cols])


def fmt_mean_std(stat: tuple[float, float, int], digits: int = 1) -> str:
    mean, std, n = stat
    if n == 0:
        return "–"
    if n < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_table(groups: Sequence[Group], ks: Sequence[int], linear: bool, multi: bool) -> str:
    head = ["strategy", "mask", "seeds"]
    head += [f"k-NN@{k} top-1" for k in ks]
    if linear:
        head.append("linear top-1")
    head.append("img/s")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for g in groups:
        seeds = str(len(g.seeds))
        if g.planned_seeds and g.planned_seeds != len(g.seeds):
            seeds += f" of {g.planned_seeds}"
        mask, _, extra = g.mask.partition("; ")
        cells = [g.label(multi), (f"`{mask}`" if mask else "") + (f" + {extra}" if extra else "")]
        cells.append(seeds)
        cells += [fmt_mean_std(g.stats[knn_col(k)]) for k in ks]
        if linear:
            cells.append(fmt_mean_std(g.stats["linear_top1"]))
        ips = g.stats["images_per_s"][0]
        cells.append("–" if math.isnan(ips) else f"{ips:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(cc: CompareConfig, groups: Sequence[Group], notes: Sequence[str] = ()) -> str:
    ev = cc.eval
    epochs = sorted({g.epochs for g in groups})
    linear = (
        f"; linear probe on {ev.linear_features} features, {ev.linear_epochs} epochs"
        if ev.linear
        else ""
    )
    text = [
        "# Strategy comparison",
        "",
        f"Compare config: `{cc.source}` (base `{cc.base}`).",
        f"Final epoch ({', '.join(map(str, epochs))}); k-NN of the teacher backbone "
        f"({ev.features} features, T = {ev.temperature}) on the val split against the "
        "pretraining train split"
        + linear
        + ". Values are top-1 % as mean ± sample std over seeds (no ± with one seed).",
        "",
        summary_table(groups, ev.knn_ks, ev.linear, cc.multi_budget),
    ]
    if notes:
        text += [""] + [f"- {n}" for n in notes]
    return "\n".join(text) + "\n"
