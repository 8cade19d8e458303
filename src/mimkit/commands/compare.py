"""``mimkit compare``: a grid of masking strategies x seeds (x epoch budgets), pretrained,
evaluated with k-NN (and optionally a linear probe) at every kept epoch, and summarised."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mimkit.commands.argtypes import positive_int
from mimkit.config import parse_override
from mimkit.errors import ConfigError
from mimkit.folder_lock import FolderLock


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare",
        help="pretrain and evaluate a grid of masking strategies x seeds, then summarise",
        description=(
            "Run every (strategy, seed, epochs) of a compare config one after the other: "
            "pretrain into OUT/runs/<run>, evaluate k-NN at every kept checkpoint, write "
            "OUT/results.csv, summary.md, summary.csv, knn_vs_epoch.png and final_bar.png. "
            "Rerunning resumes: finished runs are skipped."
        ),
    )
    p.add_argument(
        "--config",
        default="fashion_mnist_strategies",
        help="compare YAML, or the name of a shipped one (default: %(default)s)",
    )
    p.add_argument(
        "--output-dir", help="where runs and results go (default: runs/compare_<config name>)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the grid and exit")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this strategy (name or folder slug; repeatable)",
    )
    p.add_argument(
        "--launcher",
        choices=("inprocess", "torchrun"),
        default="inprocess",
        help="pretrain in this process (default) or with torchrun in a subprocess",
    )
    p.add_argument(
        "--nproc-per-node",
        type=positive_int,
        default=1,
        help="processes per run with --launcher torchrun (default 1)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field in every run, e.g. --set run.device=cuda",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rewrite the tables and figures from the runs on disk",
    )
    p.set_defaults(run=run)
    return p


def _select(runs, only: list[str]):
    if not only:
        return runs
    wanted = {o.strip().lower() for o in only}
    known = {r.strategy.name.lower() for r in runs} | {r.strategy.slug for r in runs}
    missing = sorted(wanted - known)
    if missing:
        names = ", ".join(dict.fromkeys(r.strategy.name for r in runs))
        raise ConfigError(f"--only {missing[0]!r} is not a strategy of this config ({names})")
    return [r for r in runs if r.strategy.name.lower() in wanted or r.strategy.slug in wanted]


def grid_table(runs, cc) -> str:
    from mimkit.compare import run_status

    head = ("run", "strategy", "mask", "seed", "epochs", "eval at", "status")
    rows = [
        (
            r.name,
            r.strategy.name,
            " ".join(r.config.masking.strategies),
            str(r.seed),
            str(r.epochs),
            ",".join(map(str, r.eval_epochs)),
            run_status(r, cc),
        )
        for r in runs
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    from mimkit.compare import (
        build_grid,
        check_existing_runs,
        load_compare_config,
        read_compare_file_text,
        run_grid,
        write_report,
    )

    if args.launcher != "torchrun" and args.nproc_per_node != 1:
        raise ConfigError("--nproc-per-node needs --launcher torchrun")
    cc = load_compare_config(args.config, [parse_override(s) for s in args.set])
    out = Path(args.output_dir or f"runs/compare_{Path(cc.source).stem}")
    grid = build_grid(cc, out)  # every run's config built and validated: nothing written yet
    check_existing_runs(grid)
    runs = _select(grid, args.only)
    seeds = len({r.seed for r in grid})
    print(
        f"mimkit compare: {len(cc.strategies)} strategies, {len(grid)} runs "
        f"({seeds} distinct seeds), k-NN at epochs {','.join(map(str, grid[0].eval_epochs))}"
        + (f"; selected {len(runs)} runs" if args.only else "")
        + f"; output {out}",
        flush=True,
    )
    if args.dry_run:
        print(grid_table(runs, cc))
        return 0
    # One compare per output folder: a second one would train the same runs twice.
    with FolderLock(out, purpose="compare"):
        (out / "compare_config.yaml").write_text(read_compare_file_text(args.config)[0])
        t0 = time.perf_counter()
        notes: list[str] = []
        status = 0
        if not args.report_only:
            rep = run_grid(
                cc,
                runs,
                launcher=args.launcher,
                nproc_per_node=args.nproc_per_node,
                echo=lambda line: print(line, flush=True),
            )
            for name, msg in rep.failed.items():
                notes.append(f"run {name} failed: {msg}")
            if rep.interrupted:
                status = 130
            elif rep.failed:
                status = 1
            minutes = (time.perf_counter() - t0) / 60
            print(
                f"mimkit compare: {len(rep.trained)} runs trained/evaluated, {len(rep.skipped)} "
                f"skipped, {len(rep.failed)} failed in {minutes:.1f} min",
                flush=True,
            )
        report = write_report(cc, grid, out, notes)
        print()
        print(report.markdown)
        print("wrote " + ", ".join(str(f) for f in report.files))
        if status == 130:
            print("mimkit compare: interrupted; rerun the same command to resume.", file=sys.stderr)
        return status
