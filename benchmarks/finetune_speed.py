"""Fine-tuning's speed next to pretraining's on the same data: images/s of a training epoch
for pretraining (the README's main config) and fine-tuning (a fine-tuning config) with its
two augmentation paths (per image with PIL, or whole batches with tensor operations), each
run in its own process, round by round so that drifts in machine load hit all alike; and the
CPU cost of building one batch of views in each path (1 thread), next to the step's time.

    python benchmarks/finetune_speed.py                       # 1 thread, 3 rounds
    python benchmarks/finetune_speed.py --threads 2 --rounds 2

Fine-tuning starts from a random init of the main config's shape (speed does not depend on
the weights). images/s counts training images (each pretraining image makes two crops for
the teacher and the student; each fine-tuning image one view), over the epoch's training
time (evaluation excluded), as the runs log it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mimkit.finetune import load_finetune_config
from mimkit.finetune.data import build_data
from mimkit.ibot.config import load_config
from mimkit.ibot.data import build_train_data
from mimkit.train.batches import BatchKey, BatchViews
from mimkit.train.distributed import DistInfo

SHAPE = ["--arch", "vit_micro", "--img-size", "28", "--patch-size", "7"]
RUNS = {  # name -> (mimkit command, its extra arguments)
    "pretraining (batch views)": ("pretrain", ["--no-knn"]),
    "fine-tuning, per-image PIL views, 0 workers": (
        "finetune",
        ["--init", "random", *SHAPE, "--workers", "0", "--set", "data.batch_augment=false"],
    ),
    "fine-tuning, per-image PIL views, 2 workers": (
        "finetune",
        ["--init", "random", *SHAPE, "--workers", "2", "--set", "data.batch_augment=false"],
    ),
    "fine-tuning, whole-batch views, 0 workers": (
        "finetune",
        ["--init", "random", *SHAPE, "--workers", "0", "--set", "data.batch_augment=true"],
    ),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrain-config", default="fashion_mnist_vit_mini")
    p.add_argument("--finetune-config", default="fashion_mnist")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--subset", type=float, default=0.3, help="fraction of the train set")
    p.add_argument("--rounds", type=int, default=3)
    return p.parse_args()


def run_once(args: argparse.Namespace, name: str, out: Path) -> float:
    """Images/s of one epoch of ``name``, as the run logged it."""
    command, extra = RUNS[name]
    config = args.pretrain_config if command == "pretrain" else args.finetune_config
    cmd = [sys.executable, "-m", "mimkit", command, "--config", config, "--epochs", "1",
           "--subset", str(args.subset), "--output-dir", str(out), "--no-resume",
           "--device", "cpu", "--set", f"run.threads={args.threads}",
           "--set", "run.progress=false", "--set", "run.tensorboard=false", *extra]  # fmt: skip
    if command == "finetune":
        cmd.append("--no-knn")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    if command == "pretrain":
        rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        return next(r["images_per_s"] for r in rows if r["kind"] == "epoch")
    return json.loads((out / "finetune.json").read_text())["history"][0]["images_per_s"]


def cpu_ms(views, batch_size: int, batches: int = 10) -> float:
    """Process CPU milliseconds to build one batch of views in this process (1 thread)."""
    make = BatchViews(views)
    views.set_epoch(0)
    start = time.process_time()
    for i in range(batches):
        make[BatchKey(i, tuple(range(i * batch_size, (i + 1) * batch_size)))]
    return (time.process_time() - start) / batches * 1e3


def view_costs(args: argparse.Namespace) -> dict[str, tuple[float, int]]:
    """CPU ms per batch and the batch size, per path."""
    torch.set_num_threads(1)
    pre = load_config(args.pretrain_config, [("data.batch_augment", True)])
    pre_views = build_train_data(pre, DistInfo()).views
    batch = pre.optim.batch_size
    costs = {"pretraining (batch views)": (cpu_ms(pre_views, batch), batch)}
    for batched in (False, True):
        cfg = load_finetune_config(
            args.finetune_config, [("run.init", "random"), ("data.batch_augment", batched)]
        )
        ms = cpu_ms(build_data(cfg, 28).views, cfg.optim.batch_size)
        costs["whole-batch" if batched else "per-image"] = (ms, cfg.optim.batch_size)
    return costs


def main() -> None:
    args = parse_args()
    results: dict[str, list[float]] = {name: [] for name in RUNS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for i, name in enumerate(RUNS):
                results[name].append(run_once(args, name, Path(tmp) / f"{i}_{r}"))
    costs = view_costs(args)
    load = os.getloadavg()[0]
    print(
        f"\nOne epoch of {args.subset:g} of the embedded train set per run, {args.threads} "
        f"torch thread(s), median of {args.rounds} interleaved rounds, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} at the end; fine-tuning config {args.finetune_config}, "
        f"pretraining config {args.pretrain_config}\n"
    )
    print("| run | images/s (median) | all rounds | ms per batch | views: CPU ms per batch |")
    print("|---|---:|---|---:|---:|")
    for name, values in results.items():
        ips = statistics.median(values)
        path = "per-image" if "per-image" in name else "whole-batch"
        ms, batch = costs[name if name.startswith("pretraining") else path]
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"| {name} | {ips:.0f} | {shown} | {batch / ips * 1e3:.0f} | {ms:.1f} |")
    print("(ms per batch: the batch's share of the epoch's time, views included)")


if __name__ == "__main__":
    main()
