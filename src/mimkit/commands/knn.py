"""``mimkit knn``: weighted k-NN accuracy of a frozen backbone (DINO protocol)."""

from __future__ import annotations

import argparse
import time

from mimkit.commands.argtypes import positive_float, positive_int
from mimkit.commands.evalargs import add_eval_args, output_path, prepare_from_args
from mimkit.errors import ConfigError
from mimkit.runs.json_files import check_output_writable, write_json


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "knn",
        help="k-NN accuracy of a checkpoint's frozen backbone",
        description=(
            "Weighted k-NN on frozen features: cosine similarity to the train split's "
            "features, top-k neighbours vote with weight exp(sim/T). Features are cached in "
            "the checkpoint's folder (features/), so a rerun with other ks is instant."
        ),
    )
    add_eval_args(p, 256, "feature extraction batch size (default 256)")
    k = p.add_argument_group("k-NN")
    k.add_argument("--ks", type=positive_int, nargs="+", default=[10, 20, 100, 200])
    k.add_argument("--temperature", type=positive_float, default=0.07)
    k.add_argument("--features", choices=("cls", "cls+avgpool"), default="cls")
    k.add_argument("--fewshot", action="store_true", help="also few-shot k-NN (per-class bank)")
    k.add_argument("--shots", type=positive_int, nargs="+", default=[1, 5, 10, 20])
    k.add_argument("--draws", type=positive_int, default=5)
    k.add_argument("--fewshot-k", type=positive_int, default=20)
    k.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)
    return p


def format_table(results: dict[int, dict[str, float]]) -> str:
    has5 = any("top5" in r for r in results.values())
    lines = ["    k   top-1" + ("   top-5" if has5 else "")]
    for k, r in results.items():
        line = f"{k:>5} {r['top1']:7.2f}"
        if has5:
            line += f" {r.get('top5', float('nan')):7.2f}"
        lines.append(line)
    return "\n".join(lines)


def ks_within(ks: list[int], bank: int) -> tuple[list[int], str | None]:
    """The ks a bank of ``bank`` images allows (a larger k is that many), and the note that
    says which were lowered (None: none)."""
    over = sorted({k for k in ks if k > bank})
    if not over:
        return sorted(set(ks)), None
    note = f"k {', '.join(map(str, over))} more than the {bank} train images: k={bank} used"
    return sorted({min(k, bank) for k in ks}), note


def run(args: argparse.Namespace) -> int:
    import torch

    from mimkit.data import describe_data_spec
    from mimkit.evaluate.knn import fewshot_knn, knn_evaluate

    out = output_path(args, "knn.json")
    check_output_writable(out)
    setup = prepare_from_args(args)
    for note in setup.notes:
        print(f"note: {note}")
    t0 = time.perf_counter()
    progress = not args.quiet
    feats = {}
    hits = {}
    for split in (setup.train_split, setup.val_split):
        f, lab, hit = setup.features(
            split, args.features, args.checkpoint_key, args.batch_size, args.amp, progress
        )
        feats[split] = (f, lab)
        hits[split] = hit
    (train_f, train_l), (val_f, val_l) = feats[setup.train_split], feats[setup.val_split]
    if train_f.shape[0] == 0 or val_f.shape[0] == 0:
        raise ConfigError("a split is empty")
    dev = setup.device
    ks, note = ks_within(args.ks, train_f.shape[0])
    notes = [note] if note else []
    results = knn_evaluate(
        train_f.to(dev), train_l, val_f.to(dev), val_l, ks=ks, temperature=args.temperature
    )
    print(
        f"k-NN ({args.features}, T={args.temperature}) on {describe_data_spec(setup.data)}: "
        f"{train_f.shape[0]} train / {val_f.shape[0]} val, "
        f"features {'cached' if all(hits.values()) else 'extracted'}"
    )
    for line in notes:
        print(f"note: {line}")
    print(format_table(results))
    payload = {
        **setup.report(args.checkpoint_key),
        "num_train": int(train_f.shape[0]),
        "num_val": int(val_f.shape[0]),
        "features": args.features,
        "feature_dim": int(train_f.shape[1]),
        "temperature": args.temperature,
        "results": {str(k): v for k, v in results.items()},
    }
    if args.fewshot:
        few = fewshot_knn(
            train_f.to(dev),
            train_l,
            val_f.to(dev),
            val_l,
            shots=args.shots,
            draws=args.draws,
            k=args.fewshot_k,
            temperature=args.temperature,
            seed=args.seed,
        )
        smallest = int(torch.unique(train_l, return_counts=True)[1].min())
        over = [s for s in few if s > smallest]
        if over:
            notes.append(
                f"{', '.join(map(str, over))} shots: more than the {smallest} images of the "
                "smallest class, which then gives all of them (the bank column)"
            )
            print(f"note: {notes[-1]}")
        print(f"few-shot k-NN ({args.draws} draws; bank: images in it, k: neighbours used):")
        print("shots  bank     k   top-1     std")
        for s, r in few.items():
            print(f"{s:>5} {r['bank']:>5} {r['k']:>5} {r['top1']:7.2f} {r['std']:7.2f}")
        payload["fewshot"] = {str(s): r for s, r in few.items()}
        payload["fewshot_draws"] = args.draws
    payload["notes"] = payload["notes"] + notes
    payload["seconds"] = round(time.perf_counter() - t0, 3)
    payload["device"] = str(dev)
    write_json(out, payload)
    print(f"wrote {out}")
    return 0
