"""Data-loader workers against torch threads: which split of the cores keeps the step fed.

Runs short pretrainings of a config (default: the README's main command) for every
combination of augmentation path (``data.batch_augment``: per image with PIL, or whole
batches with tensor operations), ``data.num_workers`` and ``run.threads``, each in its own
process, round by round so that drifts in machine load hit all alike, and prints a Markdown
table of images/s and the fraction of the time the loop waited for data (``data_wait`` in
``log.jsonl``: time blocked on the loader, which with 0 workers is the time spent making
the batch, over the epoch's time).

    python benchmarks/bench_loader.py                # both paths x workers 0 1 2 x threads 2
    python benchmarks/bench_loader.py --augment batch --workers 0 2 --threads 1 --rounds 1
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

from mimkit.config import parse_override
from mimkit.ibot.config import load_config
from mimkit.ibot.data import build_train_data
from mimkit.train.batches import BatchKey, BatchViews
from mimkit.train.distributed import DistInfo

AUGMENT = {"per-image": "false", "batch": "true"}  # -> data.batch_augment


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="fashion_mnist_vit_mini")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument(
        "--augment",
        nargs="+",
        choices=AUGMENT,
        default=list(AUGMENT),
        help="augmentation paths: per image (PIL, in the workers) or whole batches",
    )
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
        help="config override for every run, e.g. optim.batch_size=64",
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    return p.parse_args()


def run_once(args: argparse.Namespace, combo: tuple[str, int, int], out: Path) -> dict:
    augment, workers, threads = combo
    extra = []
    if args.quick:
        extra = ["--arch", "vit_nano", "--img-size", "16", "--patch-size", "4", "--local-crops",
                 "1", "--batch-size", "8", "--set", "data.local_crop_size=8"]  # fmt: skip
    cmd = [
        sys.executable, "-m", "mimkit", "pretrain", "--config", args.config,
        "--output-dir", str(out), "--device", args.device, "--workers", str(workers),
        "--epochs", "1", "--subset", str(args.subset), "--no-knn", "--no-resume",
        "--set", f"run.threads={threads}", "--set", "run.progress=false",
        "--set", "run.tensorboard=false", *extra,
        "--set", f"data.batch_augment={AUGMENT[augment]}",
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
    combos = list(itertools.product(args.augment, args.workers, args.threads))
    results: dict[tuple[str, int, int], list[dict]] = {c: [] for c in combos}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for c in combos:
                results[c].append(run_once(args, c, Path(tmp) / f"{'_'.join(map(str, c))}_{r}"))
    settings = "".join(f", {kv}" for kv in args.set)
    print(
        f"\n{args.config}{settings}, one epoch of {args.subset:g} of the train set per run, "
        f"median of {args.rounds} runs, {os.cpu_count()} CPUs\n"
    )
    batches = 1 if args.quick else 20
    for augment in args.augment:
        overrides = [*args.set, f"data.batch_augment={AUGMENT[augment]}"]
        cost = loading_cost(args.config, overrides, batches)
        print(f"Building one batch of views, {augment}: {cost * 1e3:.1f} ms of CPU (1 thread).")
    print("\n| augmentation | loader workers | torch threads | images/s | data wait |")
    print("|---|---:|---:|---:|---:|")
    for c in combos:
        ips = statistics.median(x["images_per_s"] for x in results[c])
        wait = statistics.median(x["data_wait"] for x in results[c])
        print(f"| {c[0]} | {c[1]} | {c[2]} | {ips:.1f} | {wait:.1%} |")


if __name__ == "__main__":
    main()
