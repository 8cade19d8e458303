"""Block masks with the reference's real-valued budget r*N against a floored budget.

Run:  .venv/bin/python benchmarks/block_mask_budget.py [--draws 100000]

Prints a Markdown table of the mean masked count and the mean boundary length (masked /
unmasked neighbour pairs) per image, with their standard errors, for a few grids and ratios.
The floored rule is block_mask called with the ratio floor(r*N)/N; both use the reference
minimum block area (min(H, W) // 3) ** 2. These are the figures of docs/differences.md.
"""

from __future__ import annotations

import argparse
import math

import torch

from mimkit.masking import block_mask


def stats(mask: torch.Tensor) -> tuple[float, float, float, float]:
    m = mask.float()
    count = m.flatten(1).sum(1)
    edges = (m[:, 1:] != m[:, :-1]).flatten(1).sum(1) + (m[:, :, 1:] != m[:, :, :-1]).flatten(
        1
    ).sum(1)
    edges = edges.float()
    n = len(m)
    return (
        count.mean().item(),
        count.std().item() / math.sqrt(n),
        edges.mean().item(),
        edges.std().item() / math.sqrt(n),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=100_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| grid | r | budget | count (real r*N) | count (floored) | boundary (real) "
          "| boundary (floored) |")
    print("|---|---|---|---|---|---|---|")
    for grid, r in ((14, 0.3), (14, 0.45), (8, 0.35)):
        n = grid * grid
        real = stats(block_mask(args.draws, grid, r, torch.Generator().manual_seed(0)))
        floored_r = math.floor(r * n + 1e-9) / n
        floored = stats(block_mask(args.draws, grid, floored_r, torch.Generator().manual_seed(1)))
        print(
            f"| {grid}x{grid} | {r} | {r * n:.2f} | {real[0]:.2f} ± {real[1]:.3f} "
            f"| {floored[0]:.2f} ± {floored[1]:.3f} | {real[2]:.2f} ± {real[3]:.3f} "
            f"| {floored[2]:.2f} ± {floored[3]:.3f} |"
        )


if __name__ == "__main__":
    main()
