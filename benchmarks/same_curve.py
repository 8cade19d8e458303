"""Whether two runs followed the same training curve: every logged step value of one run
against the other's (loss, its terms, gradient norm, schedules), for checking that a change
of the code changed nothing it computes.

    mimkit pretrain --output-dir runs/before --max-steps 300 --no-knn --set run.threads=1
    # (change the code)
    mimkit pretrain --output-dir runs/after --max-steps 300 --no-knn --set run.threads=1
    python benchmarks/same_curve.py runs/before runs/after
"""

from __future__ import annotations

import argparse
import sys

from mimkit.train.logging import read_log

KEYS = ("loss", "cls", "patch", "contrastive", "koleo", "grad_norm", "lr", "wd", "momentum")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--tolerance", type=float, default=0.0, help="largest absolute difference")
    args = p.parse_args()
    a = {r["step"]: r for r in read_log(args.before, "step")}
    b = {r["step"]: r for r in read_log(args.after, "step")}
    steps = sorted(set(a) & set(b))
    if not steps:
        sys.exit("same_curve: the two runs share no logged step")
    worst = max(
        (abs(a[s][k] - b[s][k]), s, k) for s in steps for k in KEYS if k in a[s] and k in b[s]
    )
    print(f"{len(steps)} common logged steps (last {steps[-1]}); largest difference "
          f"{worst[0]:.3g} ({worst[2]} at step {worst[1]})")
    sys.exit(0 if worst[0] <= args.tolerance else 1)


if __name__ == "__main__":
    main()
