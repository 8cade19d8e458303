"""Training-step speed by masking strategy: one full iBOT step (teacher forward with the
readout the strategy needs, masks, student forward/backward, optimizer, EMA).

Prints a Markdown table of median step time and images/s per strategy, all in one run on
the same model and inputs, and the ratio to ``random``. CPU (defaults) or GPU:

    python benchmarks/bench_step.py                          # vit_mini, 32 px, CPU
    python benchmarks/bench_step.py --device cuda --arch vit_small --img-size 224 \
        --patch-size 16 --local-crops 6 --local-crop-size 96 --amp bf16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from mimkit.config import load_config
from mimkit.train.loop import TrainLoop
from mimkit.train.pretrain import build_pretraining


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="vit_mini")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--patch-size", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--local-crops", type=int, default=2)
    p.add_argument("--local-crop-size", type=int, default=16)
    p.add_argument("--out-dim", type=int, default=None, help="prototypes (default: config's)")
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
    overrides = [
        ("model.arch", args.arch),
        ("model.img_size", args.img_size),
        ("model.patch_size", args.patch_size),
        ("data.local_crops", args.local_crops),
        ("data.local_crop_size", args.local_crop_size),
        ("data.num_workers", 0),
        ("optim.batch_size", args.batch_size),
        ("masking.strategies", [strategy]),
        ("masking.mask_prob", 1.0),
        ("run.device", args.device),
        ("run.amp", args.amp),
        ("run.output_dir", out),
        ("run.tensorboard", False),
        ("run.progress", False),
    ]
    if args.out_dim:
        overrides += [("model.out_dim", args.out_dim), ("model.patch_out_dim", args.out_dim)]
    return build_pretraining(load_config("fashion_mnist_vit_mini", overrides))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    args = parse_args()
    if args.quick:
        args.arch, args.img_size, args.batch_size, args.local_crop_size = "vit_nano", 16, 8, 8
        args.steps, args.warmup, args.rounds = 2, 1, 1
    trainers: dict[str, TrainLoop] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, s in enumerate(args.strategies):
            trainers[s] = build(args, s, f"{tmp}/{i}")
        first = next(iter(trainers.values()))
        device = first.device
        gen = torch.Generator().manual_seed(0)
        b = args.batch_size
        crops = [torch.randn(b, 3, args.img_size, args.img_size, generator=gen) for _ in range(2)]
        crops += [
            torch.randn(b, 3, args.local_crop_size, args.local_crop_size, generator=gen)
            for _ in range(args.local_crops)
        ]
        crops = [c.to(device) for c in crops]
        times: dict[str, list[float]] = {s: [] for s in trainers}
        for t in trainers.values():
            for step in range(args.warmup):
                t.train_step(crops, step)
        # Interleave strategies round by round so that drifts in machine load hit all alike.
        for _ in range(args.rounds):
            for s, t in trainers.items():
                for step in range(args.steps):
                    sync(device)
                    t0 = time.perf_counter()
                    t.train_step(crops, args.warmup + step)
                    sync(device)
                    times[s].append(time.perf_counter() - t0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = torch.get_num_threads()
    print(
        f"\niBOT step, {args.arch} {args.img_size}px/{args.patch_size}, batch {b}, "
        f"2 global + {args.local_crops} local ({args.local_crop_size}px) crops, amp {args.amp}, "
        f"{name}, {threads} threads; median of {args.rounds * args.steps} steps\n"
    )
    print("| strategy | step (ms) | images/s | vs random |")
    print("|---|---:|---:|---:|")
    base = statistics.median(times.get("random", next(iter(times.values()))))
    for s, ts in times.items():
        med = statistics.median(ts)
        print(f"| `{s}` | {med * 1e3:.1f} | {b / med:.1f} | {med / base:.3f}x |")


if __name__ == "__main__":
    main()
