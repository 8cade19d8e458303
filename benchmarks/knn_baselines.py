"""k-NN and linear-probe baselines for the README: raw pixels, a randomly initialised ViT and,
optionally, pretrained checkpoints, all on the same split and protocol (weighted k-NN with
T = 0.07; a linear layer on frozen features: pixels, or the last 4 blocks' CLS tokens).

    python benchmarks/knn_baselines.py --config fashion_mnist_vit_mini \
        --checkpoint runs/fashion_mnist_vit_mini/checkpoint.pth
    # the setting of a compare grid (its base config with its overrides), 3 random inits
    python benchmarks/knn_baselines.py --compare fashion_mnist_strategies --seeds 0 1 2 \
        --linear-epochs 0
"""

from __future__ import annotations

import argparse

import torch

from mimkit.compare.spec import load_compare_config
from mimkit.data import build_dataset, default_normalization, eval_transform
from mimkit.evaluate import extract_features, knn_evaluate, train_linear
from mimkit.ibot.config import load_config
from mimkit.models import build_vit
from mimkit.weights.io import load_pretrained

KS = (10, 20, 100, 200)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="fashion_mnist_vit_mini")
    p.add_argument("--checkpoint", nargs="*", default=[])
    p.add_argument("--compare", help="use a compare config's base and overrides instead")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="random initialisations")
    p.add_argument("--checkpoints-only", action="store_true", help="skip pixels and random")
    p.add_argument("--linear-epochs", type=int, default=100, help="0 skips the linear probe")
    args = p.parse_args()
    if args.compare:
        cc = load_compare_config(args.compare)
        cfg = load_config(cc.base, cc.overrides)
    else:
        cfg = load_config(args.config)
    spec, size = cfg.data.dataset, cfg.model.img_size
    tf = eval_transform(size, *default_normalization(spec))
    train = build_dataset(spec, "train", tf, subset=cfg.data.subset)
    val = build_dataset(spec, "val", tf)

    rows: list[tuple[str, str, dict]] = []
    linear: list[tuple[str, str, float]] = []

    def probe(name: str, kind: str, f_tr, l_tr, f_va, l_va) -> None:
        if args.linear_epochs:
            res = train_linear(f_tr, l_tr, f_va, l_va, epochs=args.linear_epochs, progress=False)
            linear.append((name, kind, res.final["val_top1"]))

    x_tr = torch.stack([train[i][0] for i in range(len(train))]).flatten(1)
    y_tr = torch.tensor([train[i][1] for i in range(len(train))])
    x_va = torch.stack([val[i][0] for i in range(len(val))]).flatten(1)
    y_va = torch.tensor([val[i][1] for i in range(len(val))])
    if not args.checkpoints_only:
        rows.append(("raw pixels", f"{x_tr.shape[1]}-d", knn_evaluate(x_tr, y_tr, x_va, y_va, KS)))
        probe("raw pixels", f"{x_tr.shape[1]}-d", x_tr, y_tr, x_va, y_va)

    models = []
    if not args.checkpoints_only:
        for seed in args.seeds:
            torch.manual_seed(seed)
            random_vit = build_vit(cfg.model.arch, size, cfg.model.patch_size)
            models.append((f"random-init {cfg.model.arch} (seed {seed})", random_vit))
    models += [(f"pretrained {path}", load_pretrained(path)[0]) for path in args.checkpoint]
    for name, model in models:
        for mode in ("cls", "cls+avgpool"):
            f_tr, l_tr = extract_features(model, train, "cpu", 256, mode, progress=False)
            f_va, l_va = extract_features(model, val, "cpu", 256, mode, progress=False)
            rows.append((name, mode, knn_evaluate(f_tr, l_tr, f_va, l_va, KS)))
        f_tr, l_tr = extract_features(model, train, "cpu", 256, "last4", progress=False)
        f_va, l_va = extract_features(model, val, "cpu", 256, "last4", progress=False)
        probe(name, "last-4 CLS", f_tr, l_tr, f_va, l_va)

    print(f"\nk-NN top-1 (%) on {spec} val ({len(val)} images), bank = train ({len(train)})\n")
    print("| features | kind | " + " | ".join(f"k={k}" for k in KS) + " |")
    print("|---|---|" + "---:|" * len(KS))
    for name, kind, res in rows:
        print(f"| {name} | {kind} | " + " | ".join(f"{res[k]['top1']:.2f}" for k in KS) + " |")
    if linear:
        print(f"\nLinear probe top-1 (%), {args.linear_epochs} epochs, final epoch\n")
        print("| features | kind | top-1 |\n|---|---|---:|")
        for name, kind, top1 in linear:
            print(f"| {name} | {kind} | {top1:.2f} |")


if __name__ == "__main__":
    main()
