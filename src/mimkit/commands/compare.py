"""``mimkit compare``: a grid of masking strategies x seeds (x epoch budgets), pretrained,
evaluated with k-NN (and optionally a linear probe) at every kept epoch, and summarised."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mimkit.commands.argtypes import non_negative_int, positive_int
from mimkit.config import parse_override
from mimkit.errors import ConfigError
from mimkit.runs.lock import FolderLock


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare",
        help="pretrain and evaluate a grid of masking strategies x seeds, then summarise",
        description=(
            "Run every (strategy, seed, epochs) of a compare config: pretrain into "
            "OUT/runs/<run>, evaluate every kept checkpoint as the config's eval: section "
            "says (k-NN, low-shot k-NN, linear probe, fine-tuning, mask diagnostics), write "
            "OUT/results.csv, summary.md, summary.csv, knn_vs_epoch.png, final_bar.png, "
            "final_delta.png and masks.png. Rerunning resumes: finished runs are skipped, "
            "and on a finished grid only the evaluations it lacks are computed."
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
        choices=("inprocess", "torchrun", "slurm"),  # compare.launch.PRETRAINERS + slurm
        default="inprocess",
        help="pretrain in this process (default), with torchrun in a subprocess, or each run "
        "as a Slurm job through submitit (pip install mimkit[cluster])",
    )
    p.add_argument(
        "--nproc-per-node",
        type=positive_int,
        default=1,
        help="processes per run with --launcher torchrun (default 1)",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        metavar="N",
        help="N runs at once on this machine, each in its own process: CPU threads split "
        "between them, or one GPU (--nproc-per-node GPUs) per run (default 1)",
    )
    slurm = p.add_argument_group("Slurm (with --launcher slurm)")
    slurm.add_argument("--partition", help="Slurm partition of the jobs")
    slurm.add_argument(
        "--gpus-per-run",
        type=non_negative_int,
        help="GPUs per node of each run's job, one torchrun process each (default 1)",
    )
    slurm.add_argument(
        "--nodes-per-run", type=positive_int, help="nodes of each run's job (default 1)"
    )
    slurm.add_argument(
        "--time", help="time limit of each job: minutes or D-HH:MM:SS (default 24:00:00)"
    )
    slurm.add_argument("--slurm-dir", help="submitit's scripts and job logs (default OUT/slurm)")
    slurm.add_argument(
        "--cpus-per-gpu", type=positive_int, help="CPU cores per GPU of a job (default 8)"
    )
    slurm.add_argument(
        "--slurm-option",
        action="append",
        metavar="KEY=VALUE",
        help="another sbatch option, e.g. --slurm-option account=myproj (repeatable)",
    )
    slurm.add_argument(
        "--no-wait",
        action="store_true",
        help="submit and return; rerun the same command later to collect and summarise",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field in every run, e.g. --set run.device=cuda",
    )
    p.add_argument(
        "--baseline",
        metavar="NAME",
        help="strategy the others are tested against (default: Random if in the grid, "
        "else the first strategy)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rewrite the tables and figures from the runs on disk (also while "
        "a compare trains in the same folder)",
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
            run_status(r, cc.eval),
        )
        for r in runs
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


SLURM_ARGS = (
    "partition",
    "gpus_per_run",
    "nodes_per_run",
    "time",
    "slurm_dir",
    "cpus_per_gpu",
    "slurm_option",
)


def _check_launch(args: argparse.Namespace) -> None:
    """Launch options that do not go together fail before anything is read or written."""
    if args.launcher != "torchrun" and args.nproc_per_node != 1:
        raise ConfigError("--nproc-per-node needs --launcher torchrun")
    if args.launcher == "slurm":
        if args.jobs != 1:
            raise ConfigError("--jobs is for one machine; with --launcher slurm each run is a job")
        from mimkit.compare.slurm import import_submitit

        import_submitit()
        return
    given = [a for a in SLURM_ARGS if getattr(args, a) is not None] + (
        ["no_wait"] if args.no_wait else []
    )
    if given:
        raise ConfigError(f"--{given[0].replace('_', '-')} needs --launcher slurm")


def _slurm_options(args: argparse.Namespace, out: Path):
    from mimkit.compare.slurm import SlurmOptions, parse_time

    extra = {}
    for item in args.slurm_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm-option {item!r}: expected KEY=VALUE")
        extra[key.strip()] = value.strip()
    return SlurmOptions(
        folder=Path(args.slurm_dir) if args.slurm_dir else out / "slurm",
        partition=args.partition,
        gpus_per_run=1 if args.gpus_per_run is None else args.gpus_per_run,
        nodes_per_run=args.nodes_per_run or 1,
        time_min=parse_time(args.time or "24:00:00"),
        cpus_per_gpu=args.cpus_per_gpu or 8,
        extra=extra,
        wait=not args.no_wait,
    )


def _executor(args: argparse.Namespace, out: Path, runs):
    """How the runs are carried out (an :class:`~mimkit.compare.Executor`), every option
    checked before anything is written."""
    from mimkit.compare import LaunchOptions, plan_executor

    slurm = _slurm_options(args, out) if args.launcher == "slurm" else None
    jobs = 1 if args.report_only else args.jobs
    opts = LaunchOptions(args.launcher, args.nproc_per_node, jobs, slurm)
    return plan_executor(opts, runs)


def run(args: argparse.Namespace) -> int:
    from mimkit.compare import (
        baseline_strategy,
        build_grid,
        check_existing_runs,
        load_compare_config,
    )

    _check_launch(args)
    cc = load_compare_config(args.config, [parse_override(s) for s in args.set])
    out = Path(args.output_dir or f"runs/compare_{Path(cc.source).stem}")
    grid = build_grid(cc, out)  # every run's config built and validated: nothing written yet
    check_existing_runs(grid)
    baseline = baseline_strategy(cc, args.baseline)
    runs = _select(grid, args.only)
    launch = _executor(args, out, runs)
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
    if args.report_only:  # reads the records only: a report while a long grid trains
        return _run_and_report(args, cc, grid, runs, out, baseline, launch)
    # One compare per output folder: a second one would train the same runs twice.
    with FolderLock(out, purpose="compare"):
        return _run_and_report(args, cc, grid, runs, out, baseline, launch)


def _run_and_report(args, cc, grid, runs, out: Path, baseline: str, launch) -> int:
    from mimkit.compare import read_compare_file_text, write_report

    (out / "compare_config.yaml").write_text(read_compare_file_text(args.config)[0])
    t0 = time.perf_counter()
    notes: list[str] = []
    status = 0
    if not args.report_only:
        rep = launch(runs, cc.eval, echo=lambda line: print(line, flush=True))
        for name, msg in rep.failed.items():
            notes.append(f"run {name} failed: {msg}")
        if rep.interrupted:
            status = 130
        elif rep.failed:
            status = 1
        minutes = (time.perf_counter() - t0) / 60
        print(
            f"mimkit compare: {len(rep.trained)} runs trained/evaluated, {len(rep.skipped)} "
            f"skipped, {len(rep.failed)} failed in {minutes:.1f} min"
            + (
                f"; {len(rep.queued)} Slurm jobs queued or running (rerun the same command "
                "to collect them)"
                if rep.queued
                else ""
            ),
            flush=True,
        )
    report = write_report(cc, grid, out, notes, baseline)
    print()
    print(report.markdown)
    print("wrote " + ", ".join(str(f) for f in report.files))
    if status == 130:
        print("mimkit compare: interrupted; rerun the same command to resume.", file=sys.stderr)
    return status
