"""One run of a grid: pretrain it (see :mod:`mimkit.compare.launch`), evaluate its kept
checkpoints with every evaluation of the grid (:mod:`mimkit.compare.evaluations`), and
keep its record (:mod:`mimkit.compare.record`) up to date.

Everything is resumable: a run whose record holds every evaluation the grid asks for is
skipped without building anything; an interrupted pretraining resumes from its checkpoint
(``run_pretraining`` does that); an evaluation already recorded with the same settings is
not computed again, so adding an evaluation to a finished grid computes only that one.

A process working on a run holds the run's ``.compare.lock`` from start to end, so that a
second compare waits for it instead of training the run a second time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimkit.compare.evaluations import EvalContext, Evaluation, evaluation_plan
from mimkit.compare.launch import Nodes, RunFailed, pretrain
from mimkit.compare.record import COMPLETE, FAILED, EpochRecord, RunRecord, read_record
from mimkit.compare.settings import EvalSettings
from mimkit.compare.spec import RunSpec, identity_hash
from mimkit.errors import MimkitError
from mimkit.runs.lock import FolderInUseError, FolderLock
from mimkit.train.checkpoint import LATEST, epoch_checkpoint, saved_epoch
from mimkit.train.logging import read_log

RUN_LOCK = ".compare.lock"
BUSY_POLL_SECONDS = 1.0
Echo = Callable[[str], None]
TRAINING_LOG_KEYS = ("loss", "images_per_s", "nmi")


class RunBusy(MimkitError):
    """Another process (a worker of an earlier compare) is working on the run."""

    def __init__(self, run: RunSpec, pid: int | None) -> None:
        who = f"PID {pid}" if pid else "another process"
        super().__init__(f"{run.name} is being trained or evaluated by {who}")
        self.pid = pid


@dataclass
class GridReport:
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: str | None = None
    queued: list[str] = field(default_factory=list)  # Slurm jobs left running (--no-wait)


# -- where a run stands -----------------------------------------------------------------
def missing(record: RunRecord | None, run: RunSpec, plan: list[Evaluation]) -> int:
    """How many (epoch, evaluation) results the grid asks of ``run`` that its record lacks
    (an epoch whose checkpoint was not kept is not asked for, except the final one)."""
    if record is None or record.config_hash != identity_hash(run.config):
        return sum(e.due(run, epoch) for epoch in run.eval_epochs for e in plan)
    count = 0
    for epoch in run.eval_epochs:
        if epoch in record.missing_epochs and epoch != run.epochs:
            continue
        er = record.epochs_eval.get(epoch, EpochRecord())
        count += sum(e.due(run, epoch) and not er.has(e.name, e.settings) for e in plan)
    return count


def is_complete(record: RunRecord | None, run: RunSpec, plan: list[Evaluation]) -> bool:
    return record is not None and record.status == COMPLETE and missing(record, run, plan) == 0


def run_status(run: RunSpec, ev: EvalSettings) -> str:
    """``done``, ``partial`` (some training or evaluation on disk) or ``new``."""
    record = read_record(run.out)
    if is_complete(record, run, evaluation_plan(ev)):
        return "done"
    if (run.out / LATEST).is_file() or record is not None:
        return "partial"
    return "new"


def training_finished(run: RunSpec) -> bool:
    """The latest checkpoint holds every epoch. (Not the epoch log: a run stopped in the
    middle of an epoch logs that epoch too.)"""
    epoch = saved_epoch(run.out / LATEST)
    return epoch is not None and epoch >= run.epochs


def checkpoint_for_epoch(run: RunSpec, epoch: int) -> Path | None:
    kept = run.out / epoch_checkpoint(epoch)
    if kept.is_file():
        return kept
    if epoch == run.epochs and training_finished(run):
        return run.out / LATEST
    return None


def lock_run(run: RunSpec) -> FolderLock:
    """The run's lock, held by whoever trains or evaluates it; :class:`RunBusy` if held."""
    lock = FolderLock(run.out, purpose="compare run", name=RUN_LOCK)
    try:
        return lock.acquire()
    except FolderInUseError:
        raise RunBusy(run, lock.holder) from None


def busy_with(run: RunSpec) -> int | None:
    """The PID working on ``run`` now (0 when unknown), or None when nobody is."""
    if not (run.out / RUN_LOCK).is_file():
        return None
    try:
        lock_run(run).release()
    except RunBusy as err:
        return err.pid or 0
    return None


# -- evaluation -------------------------------------------------------------------------
def _epoch_log(run: RunSpec) -> dict[int, dict[str, Any]]:
    return {int(r["epoch"]): r for r in read_log(run.out, "epoch") if "epoch" in r}


def _mean_images_per_s(log: dict[int, dict[str, Any]], epochs: int) -> float | None:
    vals = [r["images_per_s"] for e, r in log.items() if e <= epochs and "images_per_s" in r]
    return sum(vals) / len(vals) if vals else None


def evaluate_run(
    run: RunSpec,
    ev: EvalSettings,
    plan: list[Evaluation],
    record: RunRecord,
    save: Callable[[], None],
) -> None:
    """Every evaluation due at every evaluated epoch that ``record`` lacks, saved one by one."""
    log = _epoch_log(run)
    for epoch in run.eval_epochs:
        done = record.epochs_eval.get(epoch, EpochRecord())
        todo = [e for e in plan if e.due(run, epoch) and not done.has(e.name, e.settings)]
        if not todo:
            continue
        path = checkpoint_for_epoch(run, epoch)
        if path is None:
            if epoch == run.epochs:
                raise RunFailed(f"no checkpoint for the final epoch {epoch} in {run.out}")
            if epoch not in record.missing_epochs:
                record.missing_epochs.append(epoch)
            continue
        er = record.epoch(epoch)
        er.checkpoint = path.name
        er.training = {k: log[epoch][k] for k in TRAINING_LOG_KEYS if k in log.get(epoch, {})}
        ctx = EvalContext(run, epoch, path, ev, log.get(epoch, {}))
        for evaluation in todo:
            t0 = time.perf_counter()
            er.put(evaluation.name, evaluation.settings, evaluation.compute(ctx))
            er.seconds = round(er.seconds + time.perf_counter() - t0, 3)
            save()


# -- one run ----------------------------------------------------------------------------
def new_record(run: RunSpec) -> RunRecord:
    return RunRecord(
        run=run.name,
        strategy=run.strategy.name,
        slug=run.strategy.slug,
        mask=list(run.config.masking.strategies),
        seed=run.seed,
        epochs=run.epochs,
        config_hash=identity_hash(run.config),
    )


def run_one(
    run: RunSpec,
    ev: EvalSettings,
    launcher: str = "inprocess",
    nproc_per_node: int = 1,
    nodes: Nodes | None = None,
) -> RunRecord:
    """Train (or resume) and evaluate one run, holding its lock; return its record.
    :class:`RunBusy` when another process works on it."""
    lock = lock_run(run)
    try:
        return _train_and_evaluate(run, ev, launcher, nproc_per_node, nodes)
    finally:
        lock.release()


def _train_and_evaluate(
    run: RunSpec, ev: EvalSettings, launcher: str, nproc_per_node: int, nodes: Nodes | None
) -> RunRecord:
    plan = evaluation_plan(ev)
    record = new_record(run)
    old = read_record(run.out)
    # Earlier results are kept only when the training they measured goes on from its
    # checkpoint; a run whose checkpoints are gone (a grid kept as records) trains anew, and
    # results of another training must not mix with the new one's.
    resumes = (run.out / LATEST).is_file()
    if old is not None and old.config_hash == record.config_hash and resumes:
        record.epochs_eval, record.missing_epochs = old.epochs_eval, old.missing_epochs
        record.pretrain_seconds = old.pretrain_seconds

    def save() -> None:
        record.write(run.out)

    if not training_finished(run):
        t0 = time.perf_counter()
        try:
            pretrain(run, launcher, nproc_per_node, nodes)
        finally:
            record.pretrain_seconds = round(record.pretrain_seconds + time.perf_counter() - t0, 1)
    record.images_per_s = _mean_images_per_s(_epoch_log(run), run.epochs)
    save()
    t0 = time.perf_counter()
    evaluate_run(run, ev, plan, record, save)
    record.eval_seconds = round(time.perf_counter() - t0, 1)
    record.status = COMPLETE
    save()
    return record


def record_failure(run: RunSpec, msg: str) -> None:
    record = read_record(run.out) or new_record(run)
    record.status, record.error = FAILED, msg
    record.write(run.out)


# -- what the executors print -------------------------------------------------------------
def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def result_line(record: RunRecord, ev: EvalSettings) -> str:
    k, knn = ev.shown_k, f"knn:{ev.knn.features[0]}"
    curve = " ".join(
        f"e{e}:{er.results[knn][f'top1_k{k}']:.1f}"
        for e, er in sorted(record.epochs_eval.items())
        if f"top1_k{k}" in er.results.get(knn, {})
    )
    final = record.epochs_eval.get(record.epochs, EpochRecord()).results
    parts = [f"k-NN@{k} {curve}"]
    for name, label in (("linear", "linear"), ("finetune", "fine-tune")):
        if "top1" in final.get(name, {}):
            parts.append(f"{label} {final[name]['top1']:.1f}")
    if record.images_per_s:
        parts.append(f"{record.images_per_s:.0f} img/s")
    return ", ".join(parts)


def first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def start_line(run: RunSpec) -> str:
    return (
        f"{run.strategy.name} seed {run.seed}, {run.epochs} epochs, mask "
        f"{' '.join(run.config.masking.strategies)}"
    )


def finish_line(record: RunRecord | None, seconds: float, ev: EvalSettings) -> str:
    done = f" ({result_line(record, ev)})" if record is not None else ""
    return f"finished in {_fmt_seconds(seconds)}{done}"


def runs_to_do(
    runs: list[RunSpec], ev: EvalSettings, report: GridReport, echo: Echo
) -> list[tuple[str, RunSpec]]:
    """``(tag, run)`` of every run not complete yet; the complete ones are reported skipped."""
    plan = evaluation_plan(ev)
    n = len(runs)
    width = len(str(n))
    todo = []
    for i, run in enumerate(runs, 1):
        tag = f"[{i:>{width}}/{n}] {run.name}"
        record = read_record(run.out)
        if is_complete(record, run, plan):
            report.skipped.append(run.name)
            echo(f"{tag}: done already, skipped ({result_line(record, ev)})")
        else:
            todo.append((tag, run))
    return todo


def wait_while_busy(run: RunSpec, tag: str, echo: Echo) -> bool:
    """Wait while another process (a worker of an earlier compare) works on ``run``;
    whether there was one to wait for."""
    pid = busy_with(run)
    if pid is None:
        return False
    who = f"PID {pid}" if pid else "another process"
    echo(f"{tag}: in use by {who} (a worker of an earlier compare); waiting for it to end")
    while busy_with(run) is not None:
        time.sleep(BUSY_POLL_SECONDS)
    return True
