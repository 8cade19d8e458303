"""Training-step speed by masking strategy: one full iBOT step (teacher forward with the
readout the strategy needs, masks, student forward/backward, optimizer, EMA).

All strategies run in one process on the same model size and inputs, interleaved round by
round. ``none`` is the same step with no masks at all (``mask_prob`` 0). As in training, each
step's mask plan (every random draw of the masks) is drawn ahead, as the loader workers do,
and its cost is printed apart. Per strategy: median step time, images/s, FLOPs per image
(``torch.utils.flop_counter``: matmuls, convolutions and attention, forward and backward),
the achieved FLOP rate and, on a card of known peak under bf16/fp16 autocast, the MFU.

    python benchmarks/bench_step.py                          # the main config, CPU, 1 thread
    python benchmarks/bench_step.py --device cuda --arch vit_small --img-size 224 \\
        --patch-size 16 --local-crops 6 --local-crop-size 96 --amp bf16 --compile inductor
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from mimkit.ibot.config import load_config
from mimkit.ibot.pretrain import build_pretraining
from mimkit.train.loop import TrainLoop
from mimkit.train.method import Batch

NO_LABELS = torch.zeros(0, dtype=torch.long)  # the step reads no labels

NO_MASKS = "none"

# Dense bf16/fp16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets;
# the first pattern that matches the device name wins. Other devices: throughput only.
PEAK_TFLOPS = [
    (r"H100.*PCIe", 756.0),
    (r"H100.*NVL", 835.0),
    (r"H100|H200|GH200", 989.4),
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"\bL4\b", 121.0),
]


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
        "--mask-prob", type=float, default=None, help="probability that an image is masked"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none")
    p.add_argument("--compile", default="none", help="run.compile: a torch.compile backend")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over strategies")
    p.add_argument(
        "--strategies",
        nargs="+",
        default=[NO_MASKS, "random", "block", "high", "high@rollout"],
        help=f"mask strategies ({NO_MASKS}: no masks)",
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
        ("masking.mask_prob", 0.0 if strategy == NO_MASKS else args.mask_prob),
    ]
    overrides = [(k, v) for k, v in geometry if v is not None] + [
        ("data.num_workers", 0),
        ("run.threads", args.threads),
        ("masking.strategies", ["random" if strategy == NO_MASKS else strategy]),
        ("masking.start_epoch", 0.0),
        ("run.device", args.device),
        ("run.amp", args.amp),
        ("run.compile", args.compile),
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


def peak_tflops(device: torch.device, amp: str) -> float | None:
    """The device's dense half-precision peak, when it is known and the step uses it."""
    if device.type != "cuda" or amp not in ("bf16", "fp16", "auto"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for pattern, peak in PEAK_TFLOPS if re.search(pattern, name)), None)


def count_syncs(t: TrainLoop, crops: list[torch.Tensor], step: int) -> int | None:
    """Host synchronisations of one step, as CUDA's sync debug mode reports them."""
    if t.device.type != "cuda":
        return None
    plan = t.method.planner(step, crops[0].shape[0])
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t.train_step(Batch(crops, NO_LABELS, plan), step)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


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
        device, cfg = first.device, first.method.cfg
        gen = torch.Generator().manual_seed(0)
        b, size, local = cfg.optim.batch_size, cfg.model.img_size, cfg.data.local_crop_size
        crops = [torch.randn(b, 3, size, size, generator=gen) for _ in range(2)]
        crops += [
            torch.randn(b, 3, local, local, generator=gen) for _ in range(cfg.data.local_crops)
        ]
        crops = [c.to(device) for c in crops]
        times: dict[str, list[float]] = {s: [] for s in trainers}
        cpu_times: dict[str, list[float]] = {s: [] for s in trainers}
        plan_times: dict[str, list[float]] = {s: [] for s in trainers}
        flops: dict[str, float] = {}
        syncs: dict[str, int | None] = {}
        memory: dict[str, float] = {}
        for s, t in trainers.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for step in range(args.warmup):
                t.train_step(Batch(crops, NO_LABELS), step)
            if device.type == "cuda":  # every strategy's models are resident: an upper bound
                memory[s] = torch.cuda.max_memory_allocated(device) / 2**30
            # One more step, not timed, eager: the compiled kernels hide their FLOPs.
            with torch.compiler.set_stance("force_eager"), FlopCounterMode(display=False) as c:
                t.train_step(Batch(crops, NO_LABELS), args.warmup)
            flops[s] = c.get_total_flops() / b
            syncs[s] = count_syncs(t, crops, args.warmup + 1)
        first_step = args.warmup + 2
        # Interleave strategies round by round so that drifts in machine load hit all alike.
        for r in range(args.rounds):
            for s, t in trainers.items():
                for i in range(args.steps):
                    step = first_step + r * args.steps + i
                    c0 = time.process_time()  # what a loader worker spends on the plan
                    plan = t.method.planner(step, b)
                    plan_times[s].append(time.process_time() - c0)
                    sync(device)
                    t0, c0 = time.perf_counter(), time.process_time()
                    t.train_step(Batch(crops, NO_LABELS, plan), step)
                    sync(device)
                    times[s].append(time.perf_counter() - t0)
                    cpu_times[s].append(time.process_time() - c0)
        for t in trainers.values():
            t.close()
    print_table(args, trainers, times, cpu_times, plan_times, flops, syncs, memory)


def print_table(args, trainers, times, cpu_times, plan_times, flops, syncs, memory) -> None:
    masked = [t for s, t in trainers.items() if s != NO_MASKS] or list(trainers.values())
    device, cfg = masked[0].device, masked[0].method.cfg
    b, local = cfg.optim.batch_size, cfg.data.local_crop_size
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = peak_tflops(device, args.amp)
    # The FLOP rate per second of wall time on a GPU, per second of process CPU time on a CPU.
    unit, scale = ("TFLOP/s", 1e12) if device.type == "cuda" else ("GFLOP/s (CPU s)", 1e9)
    print(
        f"\niBOT step, {cfg.model.arch} {cfg.model.img_size}px/{cfg.model.patch_size}, "
        f"batch {b}, 2 global + {cfg.data.local_crops} local ({local}px) crops, "
        f"{cfg.model.out_dim} prototypes, mask_prob {cfg.masking.mask_prob} ({NO_MASKS}: 0), "
        f"amp {args.amp}, compile {args.compile}, {name}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; median of {args.rounds * args.steps} steps\n"
    )
    base = NO_MASKS if NO_MASKS in times else next(iter(times))
    # On a (shared) CPU the process's CPU time moves less with the load than wall time.
    cost = cpu_times if device.type == "cpu" else times
    t_base, c_base = statistics.median(times[base]), statistics.median(cost[base])
    f_base = flops[base]
    what = " (process CPU)" if device.type == "cpu" else ""
    head = (
        f"| strategy | step (ms) | images/s | vs {base} | GFLOP/image | "
        f"per FLOP vs {base}{what} | {unit} |"
    )
    head += " MFU |" if peak else ""
    head += " process CPU (ms) | plan in workers (ms) |"
    head += " host syncs | peak memory (GiB) |" if device.type == "cuda" else ""
    print(head)
    print("|---" + "|---:" * (head.count("|") - 2) + "|")
    worst = 0.0
    for s, ts in times.items():
        med = statistics.median(ts)
        per_flop = (statistics.median(cost[s]) / c_base) / (flops[s] / f_base)
        if s != base:
            worst = max(worst, per_flop)
        rate = flops[s] * b / statistics.median(cost[s])
        row = (
            f"| `{s}` | {med * 1e3:.1f} | {b / med:.1f} | {med / t_base:.3f}x "
            f"| {flops[s] / 1e9:.3f} | {per_flop:.3f}x | {rate / scale:.1f} |"
        )
        row += f" {100 * rate / (peak * 1e12):.1f}% |" if peak else ""
        row += f" {statistics.median(cpu_times[s]) * 1e3:.1f} |"
        row += f" {statistics.median(plan_times[s]) * 1e3:.2f} |"
        row += f" {syncs[s]} | {memory[s]:.1f} |" if device.type == "cuda" else ""
        print(row)
    if peak is None:
        print(f"\n(no known peak for {name} with amp {args.amp}: no MFU)")
    if len(times) > 1:
        verdict = "within" if worst <= 1.02 else "NOT within"
        print(
            f"\nSlowest strategy per FLOP{what}: {worst:.3f}x the step with no masks "
            f"({verdict} the "
            "2% goal). The masked-patch term itself adds FLOPs (GFLOP/image); 'per FLOP' "
            "divides them out, leaving the cost of making the masks."
        )


if __name__ == "__main__":
    main()
