"""Time-to-accuracy figure: k-NN@20 of the teacher against training minutes, from runs' logs.

Each run must have logged an online k-NN (``run.knn_every_epochs``). Horizontal lines show the
raw-pixel and random-weight k-NN on the same split, read from a run's ``reference_knn.json``
(written by ``mimkit pretrain`` at its end) or given with ``--pixels`` / ``--random``.

    python benchmarks/plot_time_to_accuracy.py runs/study/r28-koleo0.3-lr2x-8ep \
        runs/study/r18-huge-koleo0.1 --speed runs/study --pixels 83.15 --random 65.1 \
        --out docs/images/time_to_accuracy.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from recipe_study import curve, idle_speed  # noqa: E402  (same folder)


def references(runs: list[Path]) -> dict[str, float]:
    for run in runs:
        path = run / "reference_knn.json"
        if path.is_file():
            return json.loads(path.read_text())["top1"]
    return {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--labels", nargs="+")
    p.add_argument("--pixels", type=float, help="raw-pixel k-NN (default: from reference_knn)")
    p.add_argument("--random", type=float, help="random-weight k-NN (default: likewise)")
    p.add_argument(
        "--speed",
        type=Path,
        help="folder with recipe_speed.py's speed.json: minutes at each run's idle speed "
        "(by run folder name) instead of the throughput the run logged",
    )
    p.add_argument("--out", type=Path, default=Path("time_to_accuracy.png"))
    p.add_argument("--title", default="k-NN@20 of the teacher's CLS token, embedded val split")
    args = p.parse_args()
    labels = args.labels or [r.name for r in args.runs]
    if len(labels) != len(args.runs):
        p.error(f"{len(labels)} labels for {len(args.runs)} runs")
    ref = references(args.runs)
    pixels = args.pixels if args.pixels is not None else ref.get("raw_pixels")
    random = args.random if args.random is not None else ref.get("random_weights")

    speeds = idle_speed(args.speed) if args.speed else {}
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for run, label in zip(args.runs, labels, strict=True):
        rows = curve(run, speeds.get(run.name))
        if not rows:
            raise SystemExit(f"{run} has no k-NN records in log.jsonl")
        xs = [0.0] + [r["minutes"] for r in rows]
        ys = [random if random is not None else rows[0]["knn_top1"]] + [r["knn_top1"] for r in rows]
        if random is None:
            xs, ys = xs[1:], ys[1:]
        ax.plot(xs, ys, marker="o", ms=3, label=label)
    # curves start at the random-weight line and end high: label the lines where they are not
    lines = ((pixels, "raw pixels", "--", 0, "left"), (random, "random weights", ":", 1, "right"))
    for value, name, style, end, align in lines:
        if value is not None:
            ax.axhline(value, color="grey", ls=style, lw=1)
            ax.annotate(
                f"{name} {value:.1f}",
                (ax.get_xlim()[end], value),
                ha=align,
                va="bottom",
                fontsize=8,
                color="dimgrey",
            )
    ax.set_xlabel("training minutes (2 CPU cores; k-NN passes excluded)")
    ax.set_ylabel("k-NN@20 top-1 (%)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 0.1), fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
