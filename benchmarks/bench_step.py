"""Training-step speed by masking strategy: one full iBOT step (teacher forward with the
readout the strategy needs, masks, student forward/backward, optimizer, EMA).

Prints a Markdown table of median step time and images/s per strategy, all in one run on
the same model and inputs, and the ratio to ``random``. CPU (defaults) or GPU:

    python benchmarks/bench_step.py                          # the main config, CPU
    python benchmarks/bench_step.py --device cuda --arch vit_small --img-size 224 \
        --patch-size 16 --local-crops 6 --local-crop-size 96 --amp bf16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mimkit.config import load_config
from mimkit.train.loop import TrainLoop
from mimkit.train.pretrain import build_pretraining


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="fashion_mnist_vit_mini", help="base config")
    # Geometry: the config's own values unless given.
    p.add_argument("--arch", default=None)
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--patch-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--local-crops", type=int, default=None)
    p.add_argument("--local-crop-size", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out-dim", type=int, default=None, help="prototypes (default: config's)")
    p.add_argument(
        "--mask-prob", type=float, default=1.0, help="probability that an image is masked"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over strategies")
    p.add_argument(
        "--strategies", nargs="+", default=["random", "block", "high", "high@rollout"]
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    return p.parse_args()


def build(args: argparse.Namespace, strategy: str, out: str) -> TrainLoop:
    geometry = [
        ("model.arch", args.arch),
        ("model.img_size", args.img_size),
        ("model.patch_size", args.patch_size),
        ("data.local_crops", args.local_crops),
        ("data.local_crop_size", args.local_crop_size),
        ("optim.batch_size", args.batch_size),
    ]
    overrides = [(k, v) for k, v in geometry if v is not None] + [
        ("data.num_workers", 0),
        ("run.threads", args.threads),
        ("masking.strategies", [strategy]),
        ("masking.mask_prob", args.mask_prob),
        ("run.device", args.device),
        ("run.amp", args.amp),
        ("run.output_dir", out),
        ("run.tensorboard", False),
        ("run.progress", False),
    ]
    if args.out_dim:
        overrides += [("model.out_dim", args.out_dim), ("model.patch_out_dim", args.out_dim)]
    return build_pretraining(load_config(args.config, overrides))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    args = parse_args()
    if args.quick:
        args.arch, args.img_size, args.patch_size = "vit_nano", 16, 4
        args.batch_size, args.local_crop_size = 8, 8
        args.steps, args.warmup, args.rounds = 2, 1, 1
    trainers: dict[str, TrainLoop] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, s in enumerate(args.strategies):
            trainers[s] = build(args, s, f"{tmp}/{i}")
        first = next(iter(trainers.values()))
        device, cfg = first.device, first.cfg
        gen = torch.Generator().manual_seed(0)
        b, size, local = cfg.optim.batch_size, cfg.model.img_size, cfg.data.local_crop_size
        crops = [torch.randn(b, 3, size, size, generator=gen) for _ in range(2)]
        crops += [
            torch.randn(b, 3, local, local, generator=gen) for _ in range(cfg.data.local_crops)
        ]
        crops = [c.to(device) for c in crops]
        times: dict[str, list[float]] = {s: [] for s in trainers}
        cpu_times: dict[str, list[float]] = {s: [] for s in trainers}
        flops: dict[str, float] = {}
        for s, t in trainers.items():
            for step in range(args.warmup):
                t.train_step(crops, step)
            with FlopCounterMode(display=False) as counter:  # one more step, not timed
                t.train_step(crops, args.warmup)
            flops[s] = counter.get_total_flops() / b
        # Interleave strategies round by round so that drifts in machine load hit all alike.
        for _ in range(args.rounds):
            for s, t in trainers.items():
                for step in range(args.steps):
                    sync(device)
                    t0, c0 = time.perf_counter(), time.process_time()
                    t.train_step(crops, args.warmup + step)
                    sync(device)
                    times[s].append(time.perf_counter() - t0)
                    cpu_times[s].append(time.process_time() - c0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = torch.get_num_threads()
    print(
        f"\niBOT step, {cfg.model.arch} {size}px/{cfg.model.patch_size}, batch {b}, "
        f"2 global + {cfg.data.local_crops} local ({local}px) crops, amp {args.amp}, "
        f"{name}, {threads} threads; median of {args.rounds * args.steps} steps\n"
    )
    # Process CPU time as well: on a shared machine it moves less with the load than wall time.
    print("| strategy | step (ms) | images/s | vs random | process CPU (ms) | GFLOP/image |")
    print("|---|---:|---:|---:|---:|---:|")
    base = statistics.median(times.get("random", next(iter(times.values()))))
    for s, ts in times.items():
        med, cpu = statistics.median(ts), statistics.median(cpu_times[s])
        print(
            f"| `{s}` | {med * 1e3:.1f} | {b / med:.1f} | {med / base:.3f}x | {cpu * 1e3:.1f} "
            f"| {flops[s] / 1e9:.3f} |"
        )


if __name__ == "__main__":
    main()
