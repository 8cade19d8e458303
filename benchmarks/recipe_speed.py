"""Training speed of each recipe of a recipe study, measured so that a loaded machine does
not distort it.

The study's runs log their own images/s, but they share the machine with each other, so
their wall-clock throughput says more about the load than about the recipe. Here every
recipe's training step is timed on the same synthetic batch with one torch thread, the
recipes interleaved round by round, as process CPU time (which moves little with the load).
A recipe's end-to-end speed on an idle 2-core machine (2 torch threads, 2 loader workers) is
then estimated as ``its 1-thread step images/s x scale``, where ``scale`` is the ratio of the
two for the base config: a real ``mimkit pretrain`` of it, timed once on an idle machine
(``--calibrate``), over its 1-thread step speed.

    python benchmarks/recipe_speed.py RECIPES.yaml --out runs/study
    python benchmarks/recipe_speed.py RECIPES.yaml --out runs/study --calibrate   # idle machine

Writes ``speed.json`` into ``--out`` (``recipe_study.py`` reads it for its minute axis).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from mimkit.ibot.config import load_config
from mimkit.ibot.pretrain import build_pretraining
from mimkit.train.loop import TrainLoop
from mimkit.train.method import Batch


def overrides(recipe: dict[str, Any], out: str) -> list[tuple[str, Any]]:
    sets = [(k, v) for k, v in (recipe.get("set") or {}).items()]
    if recipe.get("mask"):
        sets.append(("masking.strategies", list(recipe["mask"])))
    return sets + [
        ("data.num_workers", 0),
        ("run.output_dir", out),
        ("run.tensorboard", False),
        ("run.progress", False),
        ("run.threads", 1),
    ]


def synthetic_crops(loop: TrainLoop) -> list[torch.Tensor]:
    cfg = loop.method.cfg
    gen = torch.Generator().manual_seed(0)
    b, size, local = cfg.optim.batch_size, cfg.model.img_size, cfg.data.local_crop_size
    crops = [torch.rand(b, 3, size, size, generator=gen) for _ in range(cfg.data.global_crops)]
    crops += [torch.rand(b, 3, local, local, generator=gen) for _ in range(cfg.data.local_crops)]
    return [c.to(loop.device) for c in crops]


def time_steps(loop: TrainLoop, crops: list[torch.Tensor], first: int, steps: int) -> list[float]:
    """Per-step (process CPU seconds, wall seconds)."""
    cpu, wall = [], []
    for step in range(first, first + steps):
        c0, t0 = time.process_time(), time.perf_counter()
        loop.train_step(Batch(crops, torch.zeros(0, dtype=torch.long)), step)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    return cpu, wall


def measure(data: dict[str, Any], recipes: list[dict[str, Any]], rounds: int, steps: int):
    """1-thread images/s per recipe (median process CPU time per step)."""
    torch.set_num_threads(1)
    base = data.get("base", "fashion_mnist_vit_mini")
    loops, cpu = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, r in enumerate(recipes):
            cfg = load_config(str(r.get("base", base)), overrides(r, f"{tmp}/{i}"))
            loop = build_pretraining(cfg)
            crops = synthetic_crops(loop)
            time_steps(loop, crops, 0, 2)  # warm-up: allocator, first masks
            loops[r["name"]], cpu[r["name"]] = (loop, crops), []
        # Interleaved so that a drift in load hits every recipe alike.
        for rnd in range(rounds):
            for name, (loop, crops) in loops.items():
                cpu[name] += time_steps(loop, crops, 2 + rnd * steps, steps)[0]
    return {
        name: loops[name][0].method.cfg.optim.batch_size / statistics.median(ts)
        for name, ts in cpu.items()
    }


def calibrate(base: str, steps: int) -> float:
    """Images/s of a real ``mimkit pretrain`` of the base config (default threads and loader
    workers, k-NN off), read from its log after ``steps`` steps. Run it on an idle machine."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mimkit",
                "pretrain",
                "--config",
                base,
                "--output-dir",
                tmp,
                "--no-knn",
                "--set",
                f"run.max_steps={steps}",
                "--set",
                "run.log_every_steps=10",
                "--set",
                "run.tensorboard=false",
                "--set",
                "run.progress=false",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        records = [json.loads(line) for line in Path(tmp, "log.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("kind") == "step"][-1]["images_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipes", type=Path)
    p.add_argument("--out", type=Path, default=Path("runs/study"))
    p.add_argument("--only", action="append", default=[], help="recipe names (repeatable)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--calibrate", action="store_true", help="time the base config end to end")
    p.add_argument("--calibrate-steps", type=int, default=150)
    args = p.parse_args()
    data = yaml.safe_load(args.recipes.read_text())
    recipes = [r for r in data["recipes"] if not args.only or r["name"] in args.only]
    path = args.out / "speed.json"
    known = json.loads(path.read_text()) if path.exists() else {"one_thread_images_per_s": {}}
    base = str(data.get("base", "fashion_mnist_vit_mini"))
    if args.calibrate:
        # The base config itself, timed the same way as the recipes, in the same run.
        one = measure(data, [{"name": "_base"}], args.rounds, args.steps)["_base"]
        known["base_end_to_end_images_per_s"] = calibrate(base, args.calibrate_steps)
        known["scale"] = known["base_end_to_end_images_per_s"] / one
    if recipes:
        known["one_thread_images_per_s"].update(measure(data, recipes, args.rounds, args.steps))
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(known, indent=1, sort_keys=True))
    scale = known.get("scale")
    print(f"scale (idle end-to-end images/s of {base} / its 1-thread step images/s): {scale}")
    print("| recipe | 1-thread images/s | 2-core images/s (estimate) |\n|---|---:|---:|")
    for name, ips in known["one_thread_images_per_s"].items():
        two = f"{ips * scale:.0f}" if scale else ""
        print(f"| {name} | {ips:.1f} | {two} |")


if __name__ == "__main__":
    main()
