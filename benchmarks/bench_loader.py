"""Data-loader workers against torch threads: which split of the cores keeps the step fed.

Runs short pretrainings of a config (default: the README's main command) for every
combination of ``data.num_workers`` and ``run.threads``, each in its own process, round by
round so that drifts in machine load hit all alike, and prints a Markdown table of images/s
and the fraction of the time the loop waited for data (``data_wait`` in ``log.jsonl``;
it includes the loader's start-up, which weighs more in short runs than in whole epochs).

    python benchmarks/bench_loader.py                       # workers 0 1 2 x threads 1 2
    python benchmarks/bench_loader.py --workers 0 2 --threads 1 --subset 0.2 --rounds 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mimkit.config import load_config, parse_override
from mimkit.train.batches import BatchKey, BatchViews
from mimkit.train.data import build_train_data
from mimkit.train.distributed import DistInfo


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="fashion_mnist_vit_mini")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument(
        "--subset",
        type=float,
        default=0.5,
        help="fraction of the embedded train set per run: one epoch of it (0.5: 156 steps)",
    )
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run, e.g. data.batch_augment=false",
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    return p.parse_args()


def run_once(args: argparse.Namespace, workers: int, threads: int, out: Path) -> dict:
    extra = []
    if args.quick:
        extra = ["--arch", "vit_nano", "--img-size", "16", "--patch-size", "4",
                 "--local-crops", "1", "--batch-size", "8", "--set", "data.local_crop_size=8",
                 ]  # fmt: skip
    cmd = [
        sys.executable, "-m", "mimkit", "pretrain", "--config", args.config,
        "--output-dir", str(out), "--device", args.device, "--workers", str(workers),
        "--epochs", "1", "--subset", str(args.subset), "--no-knn", "--no-resume",
        "--set", f"run.threads={threads}", "--set", "run.progress=false",
        "--set", "run.tensorboard=false", *extra,
        *(x for kv in args.set for x in ("--set", kv)),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    return {
        "images_per_s": statistics.mean(e["images_per_s"] for e in epochs),
        "data_wait": statistics.mean(e["data_wait"] for e in epochs),
    }


def loading_cost(config: str, overrides: list[str], batches: int = 5) -> float:
    """Process CPU seconds to build one batch of views in this process (1 torch thread): what
    the loader workers must supply per step, whoever does it."""
    torch.set_num_threads(1)
    cfg = load_config(config, [parse_override(kv) for kv in overrides])
    data = build_train_data(cfg, DistInfo())
    batch = BatchViews(data.views)
    data.views.set_epoch(0)
    b = data.batch_size
    start = time.process_time()
    for i in range(batches):
        batch[BatchKey(i, tuple(range(i * b, (i + 1) * b)))]
    return (time.process_time() - start) / batches


def main() -> None:
    args = parse_args()
    if args.quick:
        args.subset, args.rounds = 0.01, 1
    combos = list(itertools.product(args.workers, args.threads))
    results: dict[tuple[int, int], list[dict]] = {c: [] for c in combos}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for w, t in combos:
                results[(w, t)].append(run_once(args, w, t, Path(tmp) / f"{w}_{t}_{r}"))
    settings = "".join(f", {kv}" for kv in args.set)
    print(
        f"\n{args.config}{settings}, one epoch of {args.subset:g} of the train set per run, "
        f"median of {args.rounds} runs, {os.cpu_count()} CPUs\n"
    )
    cost = loading_cost(args.config, args.set, 1 if args.quick else 5)
    print(f"Building one batch of views: {cost * 1e3:.0f} ms of CPU (1 thread, in-process).\n")
    print("| loader workers | torch threads | images/s | data wait |")
    print("|---:|---:|---:|---:|")
    for w, t in combos:
        ips = statistics.median(x["images_per_s"] for x in results[(w, t)])
        wait = statistics.median(x["data_wait"] for x in results[(w, t)])
        print(f"| {w} | {t} | {ips:.1f} | {wait:.1%} |")


if __name__ == "__main__":
    main()
