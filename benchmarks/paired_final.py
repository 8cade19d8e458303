"""Two strategies of a compare grid, each at its own final epoch, paired by seed: the mean
difference with its 95% interval and the exact sign-flip p. `mimkit compare` pairs only runs
of the same epoch budget; this reads its `results.csv` to pair different budgets (e.g. a
24-epoch candidate against the 20-epoch grid setting).

    python benchmarks/paired_final.py runs/grid_heads20/results.csv \
        "2-layer head, 24 epochs" "Random (the grid)"
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from mimkit.compare.stats import estimate, paired_test


def final_values(rows: list[dict[str, str]], strategy: str, metric: str) -> dict[int, float]:
    """seed -> the metric at the run's last epoch."""
    return {
        int(r["seed"]): float(r[metric])
        for r in rows
        if r["strategy"] == strategy and r["epoch"] == r["epochs"] and r.get(metric)
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="a compare grid's results.csv")
    p.add_argument("strategy")
    p.add_argument("baseline")
    p.add_argument("--metric", default="knn_top1_k20")
    args = p.parse_args()
    with args.results.open(newline="") as f:
        rows = list(csv.DictReader(f))
    ours = final_values(rows, args.strategy, args.metric)
    base = final_values(rows, args.baseline, args.metric)
    seeds = sorted(set(ours) & set(base))
    if len(seeds) < 2:
        sys.exit(f"error: {args.strategy!r} and {args.baseline!r} share {len(seeds)} seed(s)")
    for name, values in ((args.strategy, ours), (args.baseline, base)):
        e = estimate(list(values.values()))
        print(f"{name}: {e.mean:.2f} [{e.low:.2f}, {e.high:.2f}] over seeds {sorted(values)}")
    t = paired_test([ours[s] for s in seeds], [base[s] for s in seeds])
    d = t.diff
    diffs = ", ".join(f"{ours[s] - base[s]:+.2f}" for s in seeds)
    print(f"difference on seeds {seeds}: {diffs}")
    print(f"mean {d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}], {t.test} p = {t.p:.4f}")


if __name__ == "__main__":
    main()
