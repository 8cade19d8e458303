"""``mimkit linear``: linear probe on a checkpoint's frozen backbone."""

from __future__ import annotations

import argparse
import time

from mimkit.commands.argtypes import positive_float, positive_int
from mimkit.commands.evalargs import add_eval_args, output_path, prepare_from_args
from mimkit.errors import ConfigError
from mimkit.runs.json_files import check_output_writable, write_json


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "linear",
        help="linear-probe accuracy of a checkpoint's frozen backbone",
        description=(
            "A single linear layer (no BatchNorm) on the CLS tokens of the last 4 blocks "
            "(optionally with the mean patch token), SGD momentum 0.9, no weight decay, "
            "cosine LR. Default: trained on cached features; --augment trains on "
            "RandomResizedCrop+flip images through the frozen backbone every epoch."
        ),
    )
    add_eval_args(p, 1024, "probe batch size (default 1024)")
    g = p.add_argument_group("linear probe")
    g.add_argument("--epochs", type=positive_int, default=100)
    g.add_argument("--lr", type=positive_float, help="learning rate (default base-lr x batch/256)")
    g.add_argument("--base-lr", type=positive_float, default=0.003)
    g.add_argument("--avgpool", action="store_true", help="append the mean patch token")
    g.add_argument("--augment", action="store_true", help="train on augmented images")
    g.add_argument(
        "--feature-batch-size", type=positive_int, default=256, help="extraction batch size"
    )
    g.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)
    return p


def _fmt(stats: dict) -> str:
    s = f"top-1 {stats['val_top1']:.2f}"
    if "val_top5" in stats:
        s += f"  top-5 {stats['val_top5']:.2f}"
    return s


def run(args: argparse.Namespace) -> int:
    from mimkit.data import describe_data_spec
    from mimkit.evaluate.linear import scaled_lr, train_linear, train_linear_augmented

    out = output_path(args, "linear.json")
    check_output_writable(out)
    setup = prepare_from_args(args)
    for note in setup.notes:
        print(f"note: {note}")
    mode = "last4+avgpool" if args.avgpool else "last4"
    progress = not args.quiet
    t0 = time.perf_counter()
    val_f, val_l, _ = setup.features(
        setup.val_split, mode, args.checkpoint_key, args.feature_batch_size, args.amp, progress
    )
    lr = args.lr if args.lr is not None else scaled_lr(args.batch_size, args.base_lr)

    def log(stats: dict) -> None:
        if not args.quiet:
            print(f"epoch {stats['epoch']:>4}  loss {stats['train_loss']:.4f}  {_fmt(stats)}")

    from mimkit.data import num_classes

    if args.augment:
        from mimkit.data import train_eval_transform

        train_ds = setup.dataset(
            setup.train_split, train_eval_transform(setup.img_size, setup.mean, setup.std)
        )
        n_classes = max(num_classes(train_ds), int(val_l.max()) + 1)
        n_train = len(train_ds)
        result = train_linear_augmented(
            setup.model,
            train_ds,
            val_f,
            val_l,
            mode=mode,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=lr,
            num_classes=n_classes,
            device=setup.device,
            num_workers=setup.num_workers,
            amp=args.amp,
            seed=args.seed,
            progress=progress,
            log=log,
        )
        dim = val_f.shape[1]
    else:
        train_f, train_l, _ = setup.features(
            setup.train_split,
            mode,
            args.checkpoint_key,
            args.feature_batch_size,
            args.amp,
            progress,
        )
        if train_f.shape[0] == 0:
            raise ConfigError("the train split is empty")
        n_classes = int(max(train_l.max(), val_l.max())) + 1
        n_train = int(train_f.shape[0])
        dim = int(train_f.shape[1])
        result = train_linear(
            train_f,
            train_l,
            val_f,
            val_l,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=lr,
            num_classes=n_classes,
            device=setup.device,
            seed=args.seed,
            progress=progress,
            log=log,
        )
    print(
        f"linear probe ({mode}, dim {dim}, {args.epochs} epochs, lr {lr:.5g}"
        f"{', augmented' if args.augment else ''}) on {describe_data_spec(setup.data)}: "
        f"{n_train} train / {val_f.shape[0]} val"
    )
    print(f"final (epoch {result.final['epoch']}):       {_fmt(result.final)}")
    print(f"best  (epoch {result.best['epoch']}, optimistic: chosen on val): {_fmt(result.best)}")
    payload = {
        **setup.report(args.checkpoint_key),
        "num_train": n_train,
        "num_val": int(val_f.shape[0]),
        "num_classes": n_classes,
        "features": mode,
        "feature_dim": int(dim),
        "augment": bool(args.augment),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        **result.as_dict(),
        "seconds": round(time.perf_counter() - t0, 3),
        "device": str(setup.device),
    }
    write_json(out, payload)
    print(f"wrote {out}")
    return 0
