"""Recipe study: pretrain a list of recipes and record k-NN@20 against training minutes.

Each recipe is a shipped config (or YAML path) plus ``--set`` overrides. Every run logs an
online k-NN of the teacher's CLS token (val split against the train bank, k = 20, T = 0.07)
after every ``knn_every`` epochs. The minute axis is training time on an idle 2-core
machine, excluding the k-NN passes: images seen / the recipe's speed measured by
``recipe_speed.py`` (``speed.json``; runs that share a machine log a throughput that says more
about the load than about the recipe), or, for recipes it has not measured, the run's own
logged throughput. Runs resume when the command is repeated, finished runs are read from disk.

    python benchmarks/recipe_study.py benchmarks/recipes/fashion_mnist.yaml --out runs/study
    python benchmarks/recipe_study.py RECIPES.yaml --out runs/study --only r03 --jobs 2
    python benchmarks/recipe_study.py RECIPES.yaml --out runs/study --report-only

The recipes file::

    base: fashion_mnist_vit_mini           # default base config
    knn_every: 1
    recipes:
      - name: r00-baseline
        note: the main config as shipped
        epochs: 5
        set: {optim.lr: 0.004}

Writes ``study.csv`` (one row per recipe x evaluated epoch) and ``study.md`` (one row per
recipe: k-NN@20 at 5, 10, 30 and 60 training minutes where the run got that far, the final
value, images/s and the command that reproduces the run).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

MARKS = (5, 10, 30, 60)


def load_recipes(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    data = yaml.safe_load(path.read_text())
    recipes = data.get("recipes") or []
    names = [r["name"] for r in recipes]
    if len(set(names)) != len(names):
        sys.exit(f"recipe_study: duplicate recipe names in {path}")
    return data, recipes


def command(data: dict[str, Any], recipe: dict[str, Any], out: Path, threads: int) -> list[str]:
    base = recipe.get("base", data.get("base", "fashion_mnist_vit_mini"))
    sets = dict(recipe.get("set") or {})
    sets.setdefault("run.knn_every_epochs", recipe.get("knn_every", data.get("knn_every", 1)))
    args = ["--config", str(base), "--output-dir", str(out / recipe["name"])]
    if "epochs" in recipe:
        args += ["--epochs", str(recipe["epochs"])]
    if recipe.get("mask"):
        args += ["--mask", *[str(m) for m in recipe["mask"]]]
    for key, value in sets.items():
        text = json.dumps(value) if isinstance(value, (list, bool)) else str(value)
        args += ["--set", f"{key}={text}"]
    args += ["--no-knn", "--set", "run.tensorboard=false", "--set", "run.progress=false"]
    if threads:
        args += ["--set", f"run.threads={threads}"]
    return args


def reproduce(args: list[str]) -> str:
    # The printed command leaves out the study's own bookkeeping flags.
    shown, skip = [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        nxt = args[i + 1] if i + 1 < len(args) else ""
        if a == "--set" and nxt.split("=")[0] in ("run.tensorboard", "run.progress", "run.threads"):
            skip = True
            continue
        shown.append(a)
    return "mimkit pretrain " + " ".join(shlex.quote(a) for a in shown)


def idle_speed(out: Path, one_thread: bool = False) -> dict[str, float]:
    """Each recipe's images/s on an idle 2-core machine, from ``recipe_speed.py``'s
    ``speed.json`` (empty when it has not been run); ``one_thread``: on one torch thread, as
    the runs of ``mimkit compare --jobs 2`` train (no calibration needed)."""
    path = out / "speed.json"
    if not path.exists():
        return {}
    known = json.loads(path.read_text())
    scale = 1.0 if one_thread else known.get("scale")
    if not scale:
        return {}
    return {k: v * scale for k, v in known["one_thread_images_per_s"].items()}


def curve(run_dir: Path, images_per_s: float | None = None) -> list[dict[str, float]]:
    """Per evaluated epoch: epoch, step, cumulative training minutes, images/s, k-NN top-1.

    Minutes come from ``images_per_s`` when given (the recipe's measured idle speed), else
    from the throughput the run logged (which a loaded machine depresses)."""
    log = run_dir / "log.jsonl"
    if not log.exists():
        return []
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    batch = cfg["optim"]["batch_size"]
    rows, seconds, prev_step = [], 0.0, 0
    for line in log.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("kind") != "epoch":
            continue
        steps = rec["step"] - prev_step
        prev_step = rec["step"]
        speed = images_per_s or rec["images_per_s"]
        seconds += steps * batch / max(speed, 1e-9)
        if "knn_top1" in rec:
            rows.append(
                {
                    "epoch": rec["epoch"],
                    "step": rec["step"],
                    "minutes": seconds / 60,
                    "images_per_s": speed,
                    "knn_top1": rec["knn_top1"],
                    "loss": rec.get("loss", float("nan")),
                }
            )
    return rows


def at_minutes(rows: list[dict[str, float]], minutes: float) -> float | None:
    """The k-NN of the last evaluation within ``minutes`` (+5% slack for timing noise)."""
    inside = [r for r in rows if r["minutes"] <= minutes * 1.05]
    return inside[-1]["knn_top1"] if inside else None


def finished(run_dir: Path, recipe: dict[str, Any]) -> bool:
    rows = curve(run_dir)
    if not rows or not (run_dir / "config.yaml").exists():
        return False
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    return rows[-1]["epoch"] >= cfg["optim"]["epochs"]


def run_one(data, recipe, out: Path, threads: int, python: str) -> str:
    run_dir = out / recipe["name"]
    if finished(run_dir, recipe):
        return f"{recipe['name']}: done"
    run_dir.mkdir(parents=True, exist_ok=True)
    args = command(data, recipe, out, threads)
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.time()
    with (run_dir / "study_stdout.txt").open("a") as log:
        rc = subprocess.call(
            [python, "-m", "mimkit", "pretrain", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return f"{recipe['name']}: rc {rc} in {(time.time() - t0) / 60:.1f} min"


def report(data, recipes, out: Path, one_thread: bool = False) -> str:
    lines = [
        "| recipe | what changes | "
        + " | ".join(f"{m} min" for m in MARKS)
        + " | final (epochs, min) | img/s | command |",
        "|---" * (len(MARKS) + 5) + "|",
    ]
    with (out / "study.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["recipe", "epoch", "step", "minutes", "images_per_s", "knn_top1", "loss"])
        speeds = idle_speed(out, one_thread)
        for recipe in recipes:
            rows = curve(out / recipe["name"], speeds.get(recipe["name"]))
            for r in rows:
                w.writerow(
                    [
                        recipe["name"],
                        r["epoch"],
                        r["step"],
                        f"{r['minutes']:.2f}",
                        f"{r['images_per_s']:.1f}",
                        f"{r['knn_top1']:.2f}",
                        f"{r['loss']:.4f}",
                    ]
                )
            if not rows:
                continue
            marks = [at_minutes(rows, m) for m in MARKS]
            cells = [
                f"{v:.2f}" if v is not None and m <= rows[-1]["minutes"] * 1.05 else ""
                for v, m in zip(marks, MARKS, strict=True)
            ]
            ips = sorted(r["images_per_s"] for r in rows)[len(rows) // 2]
            last = rows[-1]
            cmd = reproduce(command(data, recipe, out, 0)).replace(str(out), "runs/study")
            lines.append(
                f"| {recipe['name']} | {recipe.get('note', '')} | "
                + " | ".join(cells)
                + f" | {last['knn_top1']:.2f} ({last['epoch']}, {last['minutes']:.1f}) | {ips:.0f}"
                + f" | `{cmd}` |"
            )
    text = "\n".join(lines) + "\n"
    (out / "study.md").write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipes", type=Path)
    p.add_argument("--out", type=Path, default=Path("runs/study"))
    p.add_argument("--only", action="append", default=[], help="recipe names (repeatable)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: default)")
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--one-thread",
        action="store_true",
        help="minutes at one torch thread (recipe_speed.py's measure), as compare --jobs 2 runs",
    )
    args = p.parse_args()
    data, recipes = load_recipes(args.recipes)
    chosen = [r for r in recipes if not args.only or r["name"] in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [
                pool.submit(run_one, data, r, args.out, args.threads, sys.executable)
                for r in chosen
            ]
            for fut in futures:
                print(fut.result(), flush=True)
    print(report(data, recipes, args.out, args.one_thread))


if __name__ == "__main__":
    main()
