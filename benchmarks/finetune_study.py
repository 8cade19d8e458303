"""Fine-tuning study: run a list of fine-tuning recipes (``mimkit finetune``), one at a time,
and print their val top-1 per epoch and per minute, and, for recipes run with several seeds,
the mean with a Student-t 95% interval.

Each recipe is a fine-tuning config (shipped name or YAML path) plus ``--set`` overrides, from
a checkpoint (``init``) or from scratch (``init: random``: the checkpoint's own shape). Runs
resume when the command is repeated; finished runs are read from disk. Each run's wall time
from the start of its command (frozen k-NN included unless ``knn: false``), its thread count
and the load average around it go to ``wall.json`` in its folder.

    python benchmarks/finetune_study.py benchmarks/recipes/finetune_fashion_mnist.yaml
    python benchmarks/finetune_study.py benchmarks/recipes/finetune_fashion_mnist_final.yaml
    python benchmarks/finetune_study.py RECIPES.yaml --only f03 --report-only

The recipes file::

    base: fashion_mnist                  # fine-tuning config of every recipe (default)
    init: runs/fashion_mnist_vit_mini/checkpoint.pth
    threads: 1                           # torch threads per run
    out: runs/finetune_study             # where the runs go
    epoch_marks: [5, 10, 20]             # table columns: top-1 after these epochs
    minute_marks: [5, 10]                # ... and after these minutes (evaluation included)
    recipes:
      - name: f01-no-mix
        note: Mixup and CutMix off
        epochs: 20
        seeds: [0, 1, 2]                 # default [0]
        init: random                     # default: the file's init
        set: {augment.mixup: 0, augment.cutmix: 0}
        stopped: why                     # not run (again); reported as far as it got
    compare: [[f01-no-mix, f00-base]]  # (top level) differences printed, paired by seed

Prints (and writes ``study.md`` and ``study.csv`` to the output folder) one row per recipe:
its settings read back from the run's config, top-1 at the epoch and minute marks, the last
epoch's top-1 (mean and 95% interval over seeds), the best epoch's (chosen on val:
optimistic), the minutes, images/s and the command.
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
from pathlib import Path
from typing import Any

import yaml

from mimkit.compare.stats import estimate
from mimkit.finetune.results import RESULTS_NAME

WALL_NAME = "wall.json"


def load_recipes(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    names = [r["name"] for r in data.get("recipes") or []]
    if len(set(names)) != len(names):
        sys.exit(f"finetune_study: duplicate recipe names in {path}")
    return data


def run_dirs(out: Path, recipe: dict[str, Any]) -> list[tuple[int, Path]]:
    seeds = recipe.get("seeds", [0])
    name = recipe["name"]
    return [(s, out / name if len(seeds) == 1 else out / f"{name}_s{s}") for s in seeds]


def scratch_shape(checkpoint: str) -> list[str]:
    """``--arch/--img-size/--patch-size`` of the checkpoint's backbone (for ``init: random``)."""
    from mimkit.finetune import load_finetune_config
    from mimkit.finetune.model import read_init

    desc = read_init(load_finetune_config(None, [("run.init", checkpoint)])).description
    if desc.get("arch") is None:
        sys.exit(f"finetune_study: {checkpoint} is not a preset ViT shape, cannot build it")
    return ["--arch", desc["arch"], "--img-size", str(desc["img_size"]),
            "--patch-size", str(desc["patch_size"])]  # fmt: skip


def command(data: dict[str, Any], recipe: dict[str, Any], run_dir: Path, seed: int) -> list[str]:
    """The ``mimkit finetune`` arguments of one run (the study's bookkeeping last)."""
    checkpoint = str(data["init"])
    init = recipe.get("init", checkpoint)
    args = ["--config", str(recipe.get("base", data.get("base", "fashion_mnist")))]
    args += ["--init", init]
    if init == "random":
        args += scratch_shape(checkpoint)
    if "epochs" in recipe:
        args += ["--epochs", str(recipe["epochs"])]
    if "subset" in recipe:
        args += ["--subset", str(recipe["subset"])]
    args += ["--seed", str(seed), "--output-dir", str(run_dir)]
    for key, value in (recipe.get("set") or {}).items():
        text = json.dumps(value) if isinstance(value, (list, bool)) else str(value)
        args += ["--set", f"{key}={text}"]
    if not recipe.get("knn", data.get("knn", False)):
        args.append("--no-knn")
    threads = recipe.get("threads", data.get("threads"))
    if threads:
        args += ["--set", f"run.threads={threads}"]
    return [*args, "--set", "run.tensorboard=false", "--set", "run.progress=false"]


def reproduce(args: list[str]) -> str:
    """The command as a user would type it: without the study's bookkeeping."""
    shown, skip = [], False
    hidden = ("run.tensorboard", "run.progress", "run.threads")
    for i, a in enumerate(args):
        if skip:
            skip = False
        elif a == "--set" and args[i + 1].split("=")[0] in hidden:
            skip = True
        elif a != "--no-knn":
            shown.append(a)
    return "mimkit finetune " + " ".join(shlex.quote(a) for a in shown)


def read_run(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULTS_NAME
    return json.loads(path.read_text()) if path.exists() else None


def run_one(data: dict[str, Any], recipe: dict[str, Any], run_dir: Path, seed: int) -> str:
    done = read_run(run_dir)
    if done is not None and done["status"] == "finished":
        return f"{run_dir.name}: done"
    run_dir.mkdir(parents=True, exist_ok=True)
    args = command(data, recipe, run_dir, seed)
    threads = recipe.get("threads", data.get("threads"))
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    load_before, t0 = os.getloadavg()[0], time.time()
    with (run_dir / "study_stdout.txt").open("a") as log:
        rc = subprocess.call(
            [sys.executable, "-m", "mimkit", "finetune", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    wall = {
        "seconds": time.time() - t0,
        "threads": threads,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "resumed": done is not None,  # a resumed run's wall time covers only its last part
        "rc": rc,
    }
    (run_dir / WALL_NAME).write_text(json.dumps(wall, indent=2) + "\n")
    return f"{run_dir.name}: rc {rc} in {wall['seconds'] / 60:.1f} min"


def at_epoch(history: list[dict[str, Any]], epoch: int) -> float | None:
    rows = [r for r in history if r["epoch"] == epoch]
    return rows[0]["val_top1"] if rows else None


def at_minutes(history: list[dict[str, Any]], minutes: float) -> float | None:
    """Top-1 of the last evaluation within ``minutes`` of training + evaluation time (start-up
    excluded): what the run had then (its final figure if it ended sooner)."""
    inside = [r for r in history if r["elapsed"] <= minutes * 60]
    return inside[-1]["val_top1"] if inside else None


def settings(cfg: dict[str, Any]) -> list[str]:
    """The recipe's knobs as table cells, read back from a run's config."""
    a, o, m = cfg["augment"], cfg["optim"], cfg["model"]
    crop = f"{a['crop_scale'][0]:g}-{a['crop_scale'][1]:g}"
    randaug = f"{a['randaug_ops']}x{a['randaug_magnitude']}" if a["randaug_ops"] else "off"
    mix = f"{a['mixup']:g}/{a['cutmix']:g}" if a["mixup"] or a["cutmix"] else "off"
    if (a["mixup"] or a["cutmix"]) and a["mix_prob"] < 1:
        mix += f" p{a['mix_prob']:g}"
    ema = o.get("ema", 0.0)
    return [
        str(o["epochs"]),
        f"{o['lr']:g}",
        f"{o['layer_decay']:g}",
        f"{m['drop_path_rate']:g}",
        f"{crop}, {randaug}, erase {a['erase_prob']:g}",
        mix,
        f"{a['label_smoothing']:g}",
        f"{ema:g}" if ema else "off",
    ]


def mean_cell(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return ""
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    e = estimate(vals)
    return f"{e.mean:.2f} ± {(e.high - e.low) / 2:.2f} (n={e.n})"


HEADER = ["recipe", "what changes", "epochs", "LR", "layer decay", "drop path",
          "augmentation (crop, RandAugment, erasing)", "Mixup/CutMix", "smoothing",
          "EMA"]  # fmt: skip


def wall_cell(walls: list[dict[str, Any]]) -> str:
    """Minutes from the start of the command (the longest of the seeds), threads, and the
    highest load average seen at a run's start."""
    if not walls:
        return ""
    longest = max(x["seconds"] for x in walls) / 60
    threads = walls[0]["threads"] or "all"
    load = max(x["load_before"] for x in walls)
    return f"{longest:.1f} ({threads} thr, load {load:.1f})"


def recipe_row(
    data: dict[str, Any], recipe: dict[str, Any], out: Path, writer: Any
) -> list[str] | None:
    """The recipe's table cells (None before any of its runs finished an epoch); its curves
    go to ``writer`` (CSV)."""
    runs = [(s, d, read_run(d)) for s, d in run_dirs(out, recipe)]
    runs = [(s, d, r) for s, d, r in runs if r and r["history"]]
    if not runs:
        return None
    hists = [r["history"] for _, _, r in runs]
    for (seed, _, _), hist in zip(runs, hists, strict=True):
        for h in hist:
            minutes = f"{h['elapsed'] / 60:.2f}"
            ips = f"{h.get('images_per_s', 0):.1f}"
            writer.writerow([recipe["name"], seed, h["epoch"], minutes, h["val_top1"], ips])
    walls = [
        json.loads((d / WALL_NAME).read_text()) for _, d, _ in runs if (d / WALL_NAME).exists()
    ]
    speeds = sorted(h["images_per_s"] for hist in hists for h in hist if h.get("images_per_s"))
    note = recipe.get("note", "")
    if recipe.get("stopped"):
        note += f" (stopped: {recipe['stopped']})"
    elif any(r["status"] != "finished" for _, _, r in runs):
        note += " (unfinished)"
    first_seed, first_dir, first = runs[0]
    return [
        recipe["name"],
        note,
        *settings(first["config"]),
        *(mean_cell([at_epoch(h, e) for h in hists]) for e in data.get("epoch_marks", [])),
        *(mean_cell([at_minutes(h, m) for h in hists]) for m in data.get("minute_marks", [])),
        mean_cell([h[-1]["val_top1"] for h in hists]),
        mean_cell([max(r["val_top1"] for r in h) for h in hists]),
        mean_cell([r.get("frozen_knn", {}).get("top1") for _, _, r in runs]),
        f"{max(h[-1]['elapsed'] for h in hists) / 60:.1f}",
        wall_cell(walls),
        f"{speeds[len(speeds) // 2]:.0f}" if speeds else "",
        f"`{reproduce(command(data, recipe, first_dir, first_seed))}`",
    ]


def report(data: dict[str, Any], out: Path) -> str:
    cols = HEADER + [f"ep {e}" for e in data.get("epoch_marks", [])]
    cols += [f"{m} min" for m in data.get("minute_marks", [])]
    cols += ["last top-1", "best (optimistic)", "frozen k-NN@20", "minutes", "wall", "img/s"]
    cols += ["command"]
    lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    with (out / "study.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["recipe", "seed", "epoch", "minutes", "val_top1", "images_per_s"])
        for recipe in data.get("recipes") or []:
            row = recipe_row(data, recipe, out, writer)
            if row is not None:
                lines.append("| " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n" + differences(data, out)
    (out / "study.md").write_text(text)
    return text


def differences(data: dict[str, Any], out: Path) -> str:
    """The ``compare`` pairs of the recipes file: last-epoch top-1 of the first recipe minus
    the second's, paired by seed, mean and Student-t 95% interval."""
    pairs = data.get("compare") or []
    if not pairs:
        return ""
    recipes = {r["name"]: r for r in data["recipes"]}
    lines = ["", "| difference (paired by seed) | mean | 95% CI | seeds |", "|---|---|---|---|"]
    for a, b in pairs:
        last = [
            {s: r["history"][-1]["val_top1"] for s, d in run_dirs(out, recipes[name])
             if (r := read_run(d)) and r["status"] == "finished"}
            for name in (a, b)
        ]  # fmt: skip
        seeds = sorted(set(last[0]) & set(last[1]))
        e = estimate([last[0][s] - last[1][s] for s in seeds])
        interval = f"[{e.low:+.2f}, {e.high:+.2f}]"
        lines.append(f"| {a} - {b} | {e.mean:+.2f} | {interval} | {len(seeds)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipes", type=Path)
    p.add_argument("--out", type=Path, help="default: the file's out")
    p.add_argument("--init", help="checkpoint to fine-tune (default: the file's init)")
    p.add_argument("--only", action="append", default=[], help="recipe names (repeatable)")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    data = load_recipes(args.recipes)
    if args.init:
        data["init"] = args.init
    out = args.out or Path(data.get("out", "runs/finetune_study"))
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for recipe in data.get("recipes") or []:
            if (args.only and recipe["name"] not in args.only) or recipe.get("stopped"):
                continue
            for seed, run_dir in run_dirs(out, recipe):
                print(run_one(data, recipe, run_dir, seed), flush=True)
    print(report(data, out))


if __name__ == "__main__":
    main()
