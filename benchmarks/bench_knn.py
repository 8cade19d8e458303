"""Benchmark weighted k-NN classification (CPU by default).

Run:  .venv/bin/python benchmarks/bench_knn.py          (50k x 384 bank, 10k queries)
      .venv/bin/python benchmarks/bench_knn.py --quick  (smoke run: 5k bank, 1k queries)

Compares, on random clustered features (100 classes), k = 20, T = 0.07:
- mimkit ``knn_classify`` (normalise, chunked similarity, top-k, weighted votes);
- scikit-learn ``KNeighborsClassifier(algorithm="brute", metric="cosine",
  weights=lambda d: exp((1 - d) / T))``, the same weighting (predictions are checked);
- the bare similarity product ``queries @ bank.T`` on pre-normalised features, which every
  exact k-NN must pay: the floor.
Each is timed as the median of a few runs, interleaved. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from mimkit.evaluate import knn_classify


def clustered(n: int, dim: int, classes: int, gen: torch.Generator) -> tuple:
    centers = torch.randn(classes, dim, generator=gen)
    labels = torch.randint(0, classes, (n,), generator=gen)
    feats = centers[labels] + 1.5 * torch.randn(n, dim, generator=gen)
    return feats, labels


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bank", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--temperature", type=float, default=0.07)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-sklearn", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.bank, args.queries, args.runs = 5_000, 1_000, 1
    T, k = args.temperature, args.k

    gen = torch.Generator().manual_seed(0)
    xtr, ytr = clustered(args.bank, args.dim, args.classes, gen)
    xte, _ = clustered(args.queries, args.dim, args.classes, gen)
    ntr, nte = F.normalize(xtr, dim=1), F.normalize(xte, dim=1)

    def ours():
        return knn_classify(xtr, ytr, xte, k, temperature=T).argmax(1).numpy()

    def bare():
        return nte @ ntr.T

    clf = None
    if not args.no_sklearn:
        from sklearn.neighbors import KNeighborsClassifier

        clf = KNeighborsClassifier(
            n_neighbors=k, algorithm="brute", metric="cosine", weights=lambda d: np.exp((1 - d) / T)
        ).fit(xtr.numpy(), ytr.numpy())
    xte_np = xte.numpy()

    def sk():
        return clf.predict(xte_np)

    methods = {"mimkit knn_classify": ours, "bare similarity matmul (floor)": bare}
    if clf is not None:
        methods["scikit-learn brute (same weights)"] = sk
    ours()  # warm-up
    times: dict[str, list[float]] = {m: [] for m in methods}
    outs: dict[str, object] = {}
    for _ in range(args.runs):
        for name, fn in methods.items():
            t, out = timed(fn)
            times[name].append(t)
            outs[name] = out
            del out
    med = {m: statistics.median(v) for m, v in times.items()}
    base = med["mimkit knn_classify"]
    agree = None
    if clf is not None:
        agree = float(
            (outs["mimkit knn_classify"] == outs["scikit-learn brute (same weights)"]).mean()
        )

    cpu = platform.processor() or platform.machine()
    print(
        f"\nk-NN, bank {args.bank} x {args.dim}, {args.queries} queries, {args.classes} classes, "
        f"k={k}, T={T}; median of {args.runs} run(s); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs ({cpu})\n"
    )
    print("| method | time (s) | vs mimkit |")
    print("|---|---:|---:|")
    for name in methods:
        print(f"| {name} | {med[name]:.2f} | {med[name] / base:.2f}x |")
    if agree is not None:
        print(f"\nprediction agreement mimkit vs scikit-learn: {100 * agree:.2f}%")
        print(f"speed-up over scikit-learn: {med['scikit-learn brute (same weights)'] / base:.1f}x")
    print(f"mimkit / bare product: {base / med['bare similarity matmul (floor)']:.2f}x")


if __name__ == "__main__":
    main()
