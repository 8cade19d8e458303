"""Fine-tuning on the embedded Fashion-MNIST set: a pretrained checkpoint against the same ViT
trained from scratch with the same recipe (config, seed, epochs). Prints one table: top-1 and
top-5 of the last epoch and of the best one (chosen on val: optimistic) and the wall time.

    python benchmarks/finetune_embedded.py --checkpoint runs/fashion_mnist_vit_mini/checkpoint.pth

Each run resumes if interrupted (rerun the same command); its outputs (checkpoint.pth,
finetune.json, log.jsonl) go to OUT/pretrained and OUT/scratch, OUT defaulting to
finetune_benchmark[_subsetS] next to the checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mimkit.commands.argtypes import positive_int, subset_arg
from mimkit.config import parse_override
from mimkit.finetune import finetune, load_finetune_config
from mimkit.finetune.model import read_init
from mimkit.finetune.results import RESULTS_NAME


def _scores(r: dict) -> str:
    top5 = f"{r['val_top5']:.2f}" if "val_top5" in r else "-"
    return f"{r['val_top1']:.2f} | {top5}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="pretrained weights (any mimkit knn reads)")
    p.add_argument("--checkpoint-key", default="teacher")
    p.add_argument("--config", default="fashion_mnist", help="fine-tuning config (both runs)")
    p.add_argument("--epochs", type=positive_int, help="default: the config's")
    p.add_argument("--subset", type=subset_arg, help="labels per class: 0.01, 1%%, 10 ...")
    p.add_argument("--out", help="default: finetune_benchmark[_subsetS] next to the checkpoint")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()

    common = [parse_override(text) for text in args.set]
    common += [("run.device", args.device), ("data.subset", args.subset)]
    if args.epochs:
        common.append(("optim.epochs", args.epochs))
    pretrained_init = [("run.init", args.checkpoint), ("run.init_key", args.checkpoint_key)]
    # The scratch run builds the checkpoint's own shape.
    shape = read_init(load_finetune_config(args.config, [*common, *pretrained_init]))
    desc = shape.description
    if desc.get("arch") is None:
        raise SystemExit(f"{args.checkpoint}: not a preset ViT shape, cannot build it from scratch")
    scratch_init = [("run.init", "random"), ("model.arch", desc["arch"])]
    scratch_init += [("model.img_size", desc["img_size"]), ("model.patch_size", desc["patch_size"])]

    suffix = f"_subset{args.subset:g}" if args.subset is not None else ""
    out = Path(args.out or Path(args.checkpoint).parent / f"finetune_benchmark{suffix}")
    rows = []
    for name, init in (("pretrained", pretrained_init), ("scratch", scratch_init)):
        cfg = load_finetune_config(
            args.config, [*common, *init, ("run.output_dir", str(out / name))]
        )
        print(f"== {name}: {cfg.run.init} -> {out / name}", flush=True)
        result = finetune(cfg)
        if result.status != "finished":  # e.g. Ctrl-C: rerun the command to resume
            raise SystemExit(f"{name}: stopped at step {result.step}; rerun to resume")
        rows.append((name, json.loads((out / name / RESULTS_NAME).read_text())))

    first = rows[0][1]
    print(
        f"\nFine-tuning {desc['arch']} ({desc['img_size']} px, {desc['patch_size']} px patches) "
        f"on {first['data']}: {first['num_train']} train / {first['num_val']} val images, "
        f"config {args.config}, {first['epochs']} epochs, seed {first['config']['run']['seed']}"
    )
    print("| init | top-1 last | top-5 last | top-1 best | top-5 best | best epoch | wall |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        last, best = r["last"], r["best_optimistic"]
        print(
            f"| {name} | {_scores(last)} | {_scores(best)} | {best['epoch']} "
            f"| {r['seconds'] / 60:.1f} min |"
        )
    print("best: the epoch with the highest val top-1, chosen on val (optimistic)")


if __name__ == "__main__":
    main()
