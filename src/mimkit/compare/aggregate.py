"""From a grid's run records (``eval.json``) to numbers: one row per run x evaluated epoch
(``results.csv``); per strategy (and epoch budget) at each evaluated epoch the mean, sample
std and 95% Student-t interval over seeds of every metric; and, for the accuracies, the
paired comparison of every strategy with a baseline strategy on their common seeds,
Holm-corrected across the strategies compared (see :mod:`mimkit.compare.stats`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimkit.compare import stats
from mimkit.compare.evaluations import Metric
from mimkit.compare.record import RunRecord, read_record
from mimkit.compare.spec import RunSpec
from mimkit.compare.stats import Estimate, PairedTest


def knn_col(k: int, which: str = "top1") -> str:
    """The column of k-NN on CLS features (the grid's curve)."""
    return f"knn_{which}_k{k}"


TRAINING_COLUMNS = ("loss", "images_per_s", "run_images_per_s")


def result_columns(metrics: Sequence[Metric]) -> list[str]:
    return ["strategy", "run", "seed", "epochs", "epoch", *(m.column for m in metrics)] + list(
        TRAINING_COLUMNS
    )


def collect_rows(runs: Sequence[RunSpec], metrics: Sequence[Metric]) -> list[dict[str, Any]]:
    """One row per run x evaluated epoch, from the runs' records."""
    rows = []
    for run in runs:
        record = read_record(run.out)
        if record is not None:
            rows.extend(rows_from_record(record, run.strategy.name, run.name, metrics))
    return rows


def rows_from_record(
    record: RunRecord, strategy: str, run: str, metrics: Sequence[Metric]
) -> list[dict[str, Any]]:
    rows = []
    for epoch, er in sorted(record.epochs_eval.items()):
        row: dict[str, Any] = {
            "strategy": strategy,
            "run": run,
            "seed": record.seed,
            "epochs": record.epochs,
            "epoch": epoch,
        }
        for m in metrics:
            row[m.column] = er.results.get(m.evaluation, {}).get(m.key)
        row["loss"] = er.training.get("loss")
        row["images_per_s"] = er.training.get("images_per_s")  # that epoch's training speed
        row["run_images_per_s"] = record.images_per_s  # mean over the run's epochs
        rows.append(row)
    return rows


@dataclass
class Comparison:
    """One strategy against the baseline on one metric at one epoch."""

    test: PairedTest
    p_holm: float = math.nan  # NaN when untested or when its seeds cannot reach 5%
    detectable: float = math.nan  # true difference found with 80% power, these many seeds
    seeds_for_1pt: int | None = None  # seeds needed to find a 1-point difference so

    @property
    def reachable(self) -> bool:
        """Whether its seeds can give p < 5% at all (2 / 2^n < 0.05 for the exact test):
        only such comparisons count in Holm's correction."""
        return stats.reachable(self.test.n)

    @property
    def significant(self) -> bool | None:
        """At 5% after Holm's correction; None when untested (fewer than two pairs), False
        when its seeds cannot reach 5%."""
        if math.isnan(self.test.p):
            return None
        return self.reachable and self.p_holm < stats.ALPHA


@dataclass
class Group:
    """One strategy at one epoch budget, at one evaluated epoch."""

    strategy: str
    mask: str
    epochs: int
    epoch: int
    values: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> seed -> %
    stats: dict[str, Estimate] = field(default_factory=dict)
    versus: dict[str, Comparison] = field(default_factory=dict)  # empty for the baseline
    planned_seeds: int = 0

    @property
    def seeds(self) -> list[int]:
        """Seeds with a result at this epoch (for any metric)."""
        return sorted({s for v in self.values.values() for s in v})

    @property
    def final(self) -> bool:
        return self.epoch == self.epochs

    def label(self, multi_budget: bool) -> str:
        return f"{self.strategy} ({self.epochs} ep)" if multi_budget else self.strategy


def summarize(
    rows: Sequence[dict[str, Any]],
    order: Sequence[tuple[str, int]],
    ks: Sequence[int] = (),
    linear: bool = False,
    masks: dict[str, str] | None = None,
    planned: dict[tuple[str, int], int] | None = None,
    baseline: str | None = None,
    every_epoch: bool = False,
    *,
    columns: Sequence[str] = (),
    estimated: Sequence[str] = (),
) -> list[Group]:
    """Per (strategy, budget) in ``order``: statistics over seeds at the final epoch (at
    every evaluated epoch with ``every_epoch``) of the tested columns (the k-NN columns of
    ``ks``, the linear probe's with ``linear``, and ``columns``) and of the ``estimated``
    ones; the tested ones compared with ``baseline``'s group at the same budget and epoch
    when a baseline is named."""
    tested = [knn_col(k) for k in ks] + (["linear_top1"] if linear else []) + list(columns)
    metrics = [*tested, *estimated]
    groups = []
    for strategy, epochs in order:
        sel = [r for r in rows if r["strategy"] == strategy and r["epochs"] == epochs]
        at = sorted({r["epoch"] for r in sel} | {epochs}) if every_epoch else [epochs]
        for epoch in at:
            here = [r for r in sel if r["epoch"] == epoch]
            g = Group(
                strategy=strategy,
                mask=(masks or {}).get(strategy, ""),
                epochs=epochs,
                epoch=epoch,
                planned_seeds=(planned or {}).get((strategy, epochs), 0),
            )
            for m in metrics:
                g.values[m] = {
                    int(r["seed"]): float(r[m])
                    for r in here
                    if r.get(m) is not None and math.isfinite(float(r[m]))
                }
                g.stats[m] = stats.estimate(list(g.values[m].values()))
            # Training speed: each run's mean over its epochs (one epoch's value is noisy).
            g.stats["images_per_s"] = stats.estimate(
                [r.get("run_images_per_s") or r.get("images_per_s") for r in here]
            )
            groups.append(g)
    if baseline is not None:
        compare_with(groups, baseline, tested)
    return groups


def compare_with(groups: Sequence[Group], baseline: str, metrics: Sequence[str]) -> None:
    """Fill ``versus`` of every group but the baseline's, at the baseline's budget and epoch:
    a paired test on the common seeds, Holm-corrected across the strategies compared whose
    seeds can reach significance (:func:`stats.holm_reachable`)."""
    cells: dict[tuple[int, int], list[Group]] = {}
    for g in groups:
        cells.setdefault((g.epochs, g.epoch), []).append(g)
    for cell in cells.values():
        base = next((g for g in cell if g.strategy == baseline), None)
        if base is None:
            continue
        others = [g for g in cell if g is not base]
        for m in metrics:
            for g in others:
                common = sorted(set(g.values[m]) & set(base.values[m]))
                test = stats.paired_test(
                    [g.values[m][s] for s in common], [base.values[m][s] for s in common]
                )
                sd, n = test.diff.std, test.n
                g.versus[m] = Comparison(
                    test=test,
                    detectable=stats.detectable_difference(sd, n),
                    seeds_for_1pt=stats.seeds_needed(sd),
                )
            adjusted = stats.holm_reachable(
                [g.versus[m].test.p for g in others],
                [stats.min_p_value(g.versus[m].test.n) for g in others],
            )
            for g, p in zip(others, adjusted, strict=True):
                g.versus[m].p_holm = p


def curves(
    groups: Sequence[Group], metric: str
) -> dict[tuple[str, int], list[tuple[int, Estimate]]]:
    """Per (strategy, budget): ``[(epoch, estimate over seeds)]`` where there is a result."""
    out: dict[tuple[str, int], list[tuple[int, Estimate]]] = {}
    for g in groups:
        pts = out.setdefault((g.strategy, g.epochs), [])
        if g.stats[metric].n:
            pts.append((g.epoch, g.stats[metric]))
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
