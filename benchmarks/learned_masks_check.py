"""Do the learned mask scores learn? A short run of the main config, then two read-outs.

1. Per epoch and per sixth of the run (the curves), from its log: the patch term and the
   learned scores' diagnostics (``pred_rho``: Spearman of the EMA loss predictor's scores
   with the real per-patch losses of the masked patches; ``pred_rho_student``: the same for
   the student's predictions; ``adv_entropy``, ``adv_rho``, ``adv_iou``: the policy's
   entropy, the Spearman of its logits with the real losses, the IoU of its masks with
   AttMask-High's).
2. The hardness gap, after training: on fresh crops, the student's patch loss when the
   ``k = floor(r N)`` patches of each image are those the learned score ranks highest, lowest,
   or drawn at random (the same images, the same counts, every image masked; AttMask-High for
   reference). Mean over batches with the paired difference's 95% CI (t over batches).

    python benchmarks/learned_masks_check.py --mask mix@pred --epochs 2 --out runs/check-pred
    python benchmarks/learned_masks_check.py --mask sample@adv --epochs 2 --out runs/check-adv

A finished run in ``--out`` is only read (the command resumes it). One torch thread.
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
from scipy import stats

from mimkit.config import parse_override
from mimkit.data.crops import Crops
from mimkit.ibot.config import load_config
from mimkit.ibot.pretrain import build_pretraining, run_pretraining
from mimkit.masking import ScoreSpec, parse_strategy, readout_request
from mimkit.masking.diagnostics import top_k_masks
from mimkit.masking.select import floor_count
from mimkit.train.logging import read_log

KEYS = ("patch", "pred", "pred_rho", "pred_rho_student", "adv_entropy", "adv_rho", "adv_iou")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mask", nargs="+", required=True, help="strategies, one learned score")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", required=True, help="the run's output folder")
    p.add_argument("--config", default="fashion_mnist_vit_mini")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", type=int, default=40, help="batches for the hardness gap")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return p.parse_args()


def epoch_table(out: str) -> None:
    rows = read_log(out, "epoch")
    keys = [k for k in KEYS if rows and k in rows[0]]
    print("| epoch | " + " | ".join(keys) + " |")
    print("|---:|" + "---:|" * len(keys))
    for r in rows:
        print(f"| {r['epoch']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")


def step_table(out: str, bins: int = 6) -> None:
    """The step records' means over ``bins`` equal stretches of the run: the curves."""
    rows = read_log(out, "step")
    keys = [k for k in KEYS if rows and k in rows[0]]
    last = rows[-1]["step"] if rows else 0
    print("\n| steps | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for i in range(bins):
        lo, hi = i * last // bins, (i + 1) * last // bins
        part = [r for r in rows if lo < r["step"] <= hi]
        if part:
            means = (statistics.fmean(r[k] for r in part) for k in keys)
            print(f"| {lo + 1}-{hi} | " + " | ".join(f"{m:.3f}" for m in means) + " |")


def ci95(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, half


@torch.no_grad()
def hardness_gap(cfg, kind: str, batches: int) -> None:
    loop = build_pretraining(cfg)  # resumes: the trained networks
    method, device = loop.method, loop.device
    method.train()
    g = cfg.data.global_crops
    tt, tp = method.schedules.teacher_temps(method.schedules.total_steps - 1)
    lo, hi = cfg.masking.ratio
    gen = torch.Generator().manual_seed(12345)
    depth = method.student.backbone.depth
    attmask = ScoreSpec("raw", (depth - 1,))  # AttMask-High's score, for reference
    request = readout_request([attmask], depth, method.request)
    losses: dict[str, list[float]] = {"top": [], "random": [], "bottom": [], "attmask-high": []}
    loader = loop.data.loader(cfg.optim.epochs, 0, pin_memory=False)  # crops not trained on
    for i, (crops, _, _) in enumerate(loader):
        if i == batches:
            break
        views = Crops.from_list(crops, g, device)
        out = method.teacher.encode(views.global_views, request)
        if kind == "adv":
            scores = method.student.score_heads["adv"](out.patch_tokens)
        else:
            scores = out.readout.patch_scores[kind]
        attention = attmask.compute(out.readout)
        n = scores.shape[1]
        ratio = lo + (hi - lo) * torch.rand(scores.shape[0], generator=gen, dtype=torch.float64)
        counts = floor_count(ratio, n).to(device)
        keys = torch.rand(scores.shape, generator=gen).to(device)
        masks = {
            "top": top_k_masks(scores, counts),
            "random": top_k_masks(keys, counts),
            "bottom": top_k_masks(-scores, counts),
            "attmask-high": top_k_masks(attention, counts),
        }
        for name, m in masks.items():
            torch.manual_seed(i)
            losses[name].append(float(method.losses(views, tt, tp, m).terms["patch"]))
    loop.close()
    print(
        f"\nPatch loss under each mask, {len(losses['top'])} batches of fresh crops (every "
        f"image masked, r ~ U({lo}, {hi}), the same counts for every mask):\n"
    )
    print("| masks | patch loss | minus random (95% CI) |")
    print("|---|---:|---:|")
    for name, values in losses.items():
        gap = [a - b for a, b in zip(values, losses["random"], strict=True)]
        mean, half = ci95(gap)
        shown = "" if name == "random" else f"{mean:+.3f} +- {half:.3f}"
        label = f"{name} by {kind}" if name in ("top", "bottom") else name
        print(f"| {label} | {statistics.fmean(values):.3f} | {shown} |")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    overrides = [
        ("masking.strategies", args.mask),
        ("optim.epochs", args.epochs),
        ("run.output_dir", args.out),
        ("run.seed", args.seed),
        ("run.threads", 1),
        ("run.final_knn", False),
        ("run.progress", False),
        ("run.tensorboard", False),
        *(parse_override(text) for text in args.set),
    ]
    cfg = load_config(args.config, overrides)
    kinds = {s.score.kind for s in map(parse_strategy, args.mask) if s.score and s.score.learned}
    if len(kinds) != 1:
        raise SystemExit("--mask needs exactly one learned score (pred or adv)")
    result = run_pretraining(cfg)
    print(f"run {args.out}: {result.status} at step {result.step}\n")
    epoch_table(args.out)
    step_table(args.out)
    hardness_gap(cfg, kinds.pop(), args.batches)


if __name__ == "__main__":
    main()
