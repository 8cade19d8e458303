"""Benchmark mask generation and the teacher's attention readout (CPU).

Run:  .venv/bin/python benchmarks/bench_masks.py          (full, a few minutes)
      .venv/bin/python benchmarks/bench_masks.py --quick  (smoke run)

Prints Markdown tables:
1. mask generation (score + selection) from synthetic attention (12 layers, 6 heads,
   N = 196), vectorised mimkit vs a per-image, per-patch Python loop of the kind research code
   uses. The loop is timed on a subset of the images and scaled linearly to the batch.
   Loop reference: per image, the score is computed patch by patch (a Python loop over the
   patches, each a mean over heads), sorted, and the mask filled patch by patch; random is
   per-image randperm + per-patch fill; block is BEiT's own pure-Python generator. The new
   families are timed whole (the plan's draws, then the selection, as ``mask_crop``): green
   against a per-image noise draw, 2-D convolution and sort; mix against HPM's per-image
   rule (argsort, ``np.delete`` of the forced patches, a shuffle of the rest); sample
   against a per-image, per-patch Gumbel perturbation and sort.
2. teacher forward with CLS-row / rollout readout vs the plain fused forward. Rollout is
   computed there, inside the teacher's forward pass, and nowhere else.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mimkit.masking import (
    Ramp,
    block_mask,
    mask_crop,
    parse_score,
    parse_strategy,
    random_mask,
    select_mask,
)
from mimkit.masking.green_noise import dog_kernel
from mimkit.models import Readout, ReadoutRequest, build_vit

DEPTH, HEADS, GRID = 12, 6, 14
N, T = GRID * GRID, GRID * GRID + 1


def median_time(fn: Callable[[], object], runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---- the loop reference: one image at a time, one patch at a time --------------------------
def loop_select(score: torch.Tensor, r: float, mode: str, show_max: float = 0.1) -> torch.Tensor:
    n = score.shape[0]
    k = int(r * n)
    mask = torch.zeros(n, dtype=torch.bool)
    idx = torch.argsort(score, descending=(mode != "low"))
    for i in range(k):
        mask[idx[i]] = True
    if mode == "hint":
        top = idx[: min(k, int(show_max * n))].tolist()
        for i in random.sample(top, int(show_max * r * n)):
            mask[i] = False
    return mask


def loop_cls_score(cls_attn_b: torch.Tensor, kind: str, p: float = 0.5) -> torch.Tensor:
    h, n = cls_attn_b.shape
    out = torch.zeros(n)
    for j in range(n):
        col = cls_attn_b[:, j]
        if kind == "raw":
            out[j] = col.mean()
        elif kind == "log":
            out[j] = col.clamp_min(1e-12).log().mean()
        else:
            out[j] = (col**p).mean()
    return out


def loop_multi_score(cls_b: list[torch.Tensor]) -> torch.Tensor:
    per_layer = []
    for a in cls_b:
        s = loop_cls_score(a, "raw")
        lo, hi = s.min(), s.max()
        per_layer.append([(s[j] - lo) / (hi - lo) for j in range(s.shape[0])])
    return torch.tensor([sum(vals) / len(vals) for vals in zip(*per_layer, strict=True)])


def loop_block(budget: float, rng: random.Random, min_p: int = 16) -> torch.Tensor:
    mask = [[False] * GRID for _ in range(GRID)]
    count = 0
    log_a = (math.log(0.3), math.log(1 / 0.3))
    while count < budget:
        remaining, delta = budget - count, 0
        for _ in range(10):
            target = rng.uniform(min_p, remaining)
            ar = math.exp(rng.uniform(*log_a))
            h, w = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
            if w < GRID and h < GRID:
                top, left = rng.randint(0, GRID - h), rng.randint(0, GRID - w)
                cov = sum(mask[i][j] for i in range(top, top + h) for j in range(left, left + w))
                if 0 < h * w - cov <= remaining:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if not mask[i][j]:
                                mask[i][j] = True
                                delta += 1
            if delta > 0:
                break
        if delta == 0:
            break
        count += delta
    return torch.tensor(mask)


NEW_FAMILIES = ("green", "mix@raw", "sample:0.01@raw")  # mix at alpha 0.5
KERNEL = dog_kernel(0.5, 1.0)


def loop_green(r: float) -> torch.Tensor:
    pad = KERNEL.shape[0] // 2
    white = torch.rand(1, 1, GRID + 2 * pad, GRID + 2 * pad) - 0.5
    noise = F.conv2d(white, KERNEL[None, None]).flatten()
    return loop_select(noise, r, "high")


def loop_mix(score: torch.Tensor, r: float, alpha: float, nrng: np.random.Generator):
    """HPM's generate_mask for one image: the top h by score, then a shuffle of the rest."""
    k = int(r * N)
    h = int(alpha * k)
    by_score = torch.argsort(score)
    forced = by_score[N - h :].numpy()
    rest = np.delete(np.arange(N), forced)
    nrng.shuffle(rest)
    mask = torch.zeros(N, dtype=torch.bool)
    for j in [*forced.tolist(), *rest[: k - h].tolist()]:
        mask[j] = True
    return mask


def loop_sample(score: torch.Tensor, r: float, tau: float) -> torch.Tensor:
    u = torch.rand(N)
    y = torch.zeros(N)
    for j in range(N):
        y[j] = score[j] / tau - math.log(-math.log(max(float(u[j]), 1e-30)))
    return loop_select(y, r, "high")


# ---- benchmark ------------------------------------------------------------------------------
def mask_rows(b: int, runs: int, loop_images: int, loop_runs: int) -> list[str]:
    rows = []
    g = torch.Generator().manual_seed(0)
    cls = {
        l: torch.randn(b, HEADS, T, generator=g).mul(3).softmax(-1)[:, :, 1:] for l in range(DEPTH)
    }
    readout = Readout(cls_attn=cls)
    ratio = 0.1 + 0.4 * torch.rand(b, generator=g)
    rl = ratio.tolist()
    specs = {s: parse_score(s, DEPTH) for s in ["raw:-1", "log:-1", "power:-1", "multi:4+8+11"]}

    def guided(spec, mode):
        return lambda: select_mask(specs[spec].compute(readout), ratio, mode, generator=g)

    vec = {
        "high@raw": guided("raw:-1", "high"),
        "low@raw": guided("raw:-1", "low"),
        "hint@raw": guided("raw:-1", "hint"),
        "high@log": guided("log:-1", "high"),
        "high@power": guided("power:-1", "high"),
        "high@multi:4+8+11": guided("multi:4+8+11", "high"),
        "random": lambda: random_mask(b, N, ratio, g),
        "block": lambda: block_mask(b, GRID, ratio, g),
    }
    for text in NEW_FAMILIES:
        strategy = parse_strategy(text, DEPTH).with_alpha(Ramp(0.5, 0.5, "constant"))
        vec[text] = lambda s=strategy: mask_crop(s, readout, b, GRID, ratio, g)
    rng = random.Random(0)
    nrng = np.random.default_rng(0)
    sub = min(b, loop_images)
    last = cls[DEPTH - 1]

    def loop(fn):
        def run():
            return [fn(i) for i in range(sub)]

        return run

    ref = {
        "high@raw": loop(lambda i: loop_select(loop_cls_score(last[i], "raw"), rl[i], "high")),
        "low@raw": loop(lambda i: loop_select(loop_cls_score(last[i], "raw"), rl[i], "low")),
        "hint@raw": loop(lambda i: loop_select(loop_cls_score(last[i], "raw"), rl[i], "hint")),
        "high@log": loop(lambda i: loop_select(loop_cls_score(last[i], "log"), rl[i], "high")),
        "high@power": loop(lambda i: loop_select(loop_cls_score(last[i], "power"), rl[i], "high")),
        "high@multi:4+8+11": loop(
            lambda i: loop_select(
                loop_multi_score([cls[4][i], cls[8][i], cls[11][i]]), rl[i], "high"
            )
        ),
        "random": loop(lambda i: loop_select(torch.randperm(N).float(), rl[i], "high")),
        "block": loop(lambda i: loop_block(float(rl[i]) * N, rng)),  # real budget
        "green": loop(lambda i: loop_green(rl[i])),
        "mix@raw": loop(lambda i: loop_mix(loop_cls_score(last[i], "raw"), rl[i], 0.5, nrng)),
        "sample:0.01@raw": loop(
            lambda i: loop_sample(loop_cls_score(last[i], "raw"), rl[i], 0.01)
        ),
    }
    for name, fn in vec.items():
        t_vec = median_time(fn, runs)
        t_loop = median_time(ref[name], loop_runs, warmup=0) * b / sub
        rows.append(
            f"| {name} | {b} | {t_vec * 1e3:.2f} | {t_loop * 1e3:.1f} | {t_loop / t_vec:.0f}x |"
        )
    return rows


def forward_rows(arch: str, img: int, b: int, runs: int) -> list[str]:
    torch.manual_seed(0)
    vit = build_vit(arch, img_size=img).eval()
    d = vit.depth
    x = torch.randn(b, 3, img, img)
    variants = {
        "plain fused forward": ReadoutRequest(),
        f"CLS row, 1 layer ({d - 1})": ReadoutRequest(cls_layers=frozenset({d - 1})),
        f"CLS rows, 2 layers ({d // 2 - 1}, {d - 1})": ReadoutRequest(
            cls_layers=frozenset({d // 2 - 1, d - 1})
        ),
        f"rollout, all {d} layers": ReadoutRequest(rollout_ranges=frozenset({(0, d - 1)})),
        f"rollout, last 4 layers ({d - 4}-{d - 1})": ReadoutRequest(
            rollout_ranges=frozenset({(d - 4, d - 1)})
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.no_grad():
        for req in variants.values():  # warm-up
            vit.forward_features(x, request=req)
        for _ in range(runs):  # interleaved, so background load hits every variant alike
            for name, req in variants.items():
                t0 = time.perf_counter()
                vit.forward_features(x, request=req)
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["plain fused forward"])
    rows = []
    for name, ts in times.items():
        t = statistics.median(ts)
        rows.append(f"| {name} | {t * 1e3:.1f} | {t / base:.3f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the mask ops are too small to gain from more, "
        "and a shared machine makes multi-threaded timings erratic)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batches = [64] if args.quick else [64, 256]
    runs, loop_images, loop_runs = (2, 4, 1) if args.quick else (7, 16, 3)
    fwd_runs = 3 if args.quick else 15

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(
        f"Machine: {cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"Python {platform.python_version()}\n"
    )
    print(
        f"### Mask generation: score + selection, N={N} patches, {DEPTH} layers x {HEADS} heads"
        " of synthetic attention\n"
    )
    print(
        f"Median of {runs} runs. The loop reference is timed on the first "
        f"{loop_images} images (median of {loop_runs}) and scaled linearly to the batch.\n"
    )
    print("| strategy | B | mimkit (ms) | per-image loop (ms, scaled) | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for b in batches:
        for row in mask_rows(b, runs, loop_images, loop_runs):
            print(row, flush=True)

    arch, img, b = "vit_mini", 32, 64
    print(
        f"\n### Teacher forward with attention readout: {arch} at {img} px "
        f"({(img // 4) ** 2} patches), B={b}, no grad, median of {fwd_runs} interleaved runs\n"
    )
    print("| forward | time (ms) | vs plain |")
    print("|---|---:|---:|")
    for row in forward_rows(arch, img, b, fwd_runs):
        print(row, flush=True)


if __name__ == "__main__":
    main()
