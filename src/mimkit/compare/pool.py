"""``mimkit compare --jobs N``: N runs of a grid at once on one machine, each a worker
process (:mod:`mimkit.compare.worker`) logging to ``<run>/compare.log``.

On the CPU the cores are split between the runs (a config's ``run.threads`` wins when it
pins one); with GPUs every run gets its own device(s) through ``CUDA_VISIBLE_DEVICES``.
Ctrl-C (or SIGTERM) asks every running worker once to save and stop, and waits; a second
Ctrl-C stops them at once. Rerunning resumes, as with one run at a time. A worker whose
driver dies (``kill -9``) is told to save and stop (:mod:`mimkit.compare.worker`); a rerun
that finds a run still in use by such a worker waits for it instead of starting it twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import IO

from mimkit.compare.launch import forward_interrupts
from mimkit.compare.record import FAILED, read_record
from mimkit.compare.runner import (
    Echo,
    GridReport,
    busy_with,
    finish_line,
    record_failure,
    runs_to_do,
    start_line,
)
from mimkit.compare.settings import EvalSettings
from mimkit.compare.spec import RunSpec
from mimkit.compare.worker import (
    DRIVER_PID,
    EXIT_BUSY,
    EXIT_DONE,
    EXIT_INTERRUPTED,
    RunJob,
    write_job,
)
from mimkit.errors import ConfigError

LOG_FILE = "compare.log"
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Slot:
    """Where one of the N concurrent runs goes: its GPUs (none on the CPU)."""

    index: int
    gpus: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"GPU {','.join(self.gpus)}" if self.gpus else f"slot {self.index + 1}"


def uses_gpu(device: str) -> bool:
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    import torch

    return torch.cuda.is_available()


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def plan_slots(device: str, jobs: int, gpus_per_run: int = 1) -> list[Slot]:
    """``jobs`` slots; with GPUs, ``gpus_per_run`` distinct visible devices each."""
    if not uses_gpu(device):
        return [Slot(i) for i in range(jobs)]
    gpus = visible_gpus()
    need = jobs * gpus_per_run
    if need > len(gpus):
        raise ConfigError(
            f"--jobs {jobs} with {gpus_per_run} GPU(s) per run needs {need} GPUs, "
            f"{len(gpus)} visible; one run per GPU"
        )
    return [Slot(i, tuple(gpus[i * gpus_per_run : (i + 1) * gpus_per_run])) for i in range(jobs)]


def threads_per_run(pinned: int | None, jobs: int) -> int:
    return pinned or max(1, available_cpus() // jobs)


@dataclass
class _Worker:
    tag: str
    run: RunSpec
    slot: Slot
    proc: subprocess.Popen
    log: IO[str]
    started: float


def _launch(
    run: RunSpec, slot: Slot, job: RunJob, threads: int
) -> tuple[subprocess.Popen, IO[str]]:
    path = write_job(job)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env[DRIVER_PID] = str(os.getpid())  # the worker stops when this process is gone
    if slot.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(slot.gpus)
    log = (run.out / LOG_FILE).open("a")
    cmd = [sys.executable, "-m", "mimkit.compare.run_job", str(path)]
    # A session of its own: Ctrl-C in the terminal reaches the driver only, which passes it
    # on once (a worker stopped twice would not save).
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    return proc, log


@dataclass(frozen=True)
class Parallel:
    """``len(slots)`` runs at once, in grid order, each in a worker process."""

    slots: list[Slot]
    launcher: str = "inprocess"
    nproc_per_node: int = 1

    def __call__(self, runs: list[RunSpec], ev: EvalSettings, echo: Echo) -> GridReport:
        report = GridReport()
        todo = deque(runs_to_do(runs, ev, report, echo))
        if todo:
            _Pool(self, ev, report, echo).run(todo)
        return report


class _Pool:
    """The driver's state while its workers run."""

    def __init__(self, plan: Parallel, ev: EvalSettings, report: GridReport, echo: Echo):
        self.plan, self.ev, self.report, self.echo = plan, ev, report, echo
        self.free = list(reversed(plan.slots))
        self.running: list[_Worker] = []
        self.waiting: list[tuple[str, RunSpec]] = []  # in use by an earlier compare's worker

    def run(self, todo: deque[tuple[str, RunSpec]]) -> None:
        first = todo[0][1].config
        self.threads = threads_per_run(first.run.threads, len(self.plan.slots))
        self.echo(
            f"mimkit compare: {len(self.plan.slots)} runs at once, {self.threads} torch "
            f"thread(s) each; logs in <run>/{LOG_FILE}"
        )
        with forward_interrupts():
            try:
                while todo or self.running or self.waiting:
                    self._readmit(todo)
                    while todo and self.free:
                        self._start(*todo.popleft())
                    time.sleep(POLL_SECONDS)
                    self._reap(todo, stopping=False)
            except KeyboardInterrupt:
                self.echo(
                    "mimkit compare: stopping; running runs save a checkpoint first "
                    "(Ctrl-C again to stop them at once)"
                )
                self.report.interrupted = "stopped"
                _stop(self.running)
                self._reap(todo, stopping=True)

    def _readmit(self, todo: deque[tuple[str, RunSpec]]) -> None:
        """Runs whose earlier worker has ended go back to the front of the queue."""
        for item in list(self.waiting):
            if busy_with(item[1]) is None:
                self.waiting.remove(item)
                todo.appendleft(item)

    def _start(self, tag: str, run: RunSpec) -> None:
        pid = busy_with(run)
        if pid is not None:
            who = f"PID {pid}" if pid else "another process"
            self.echo(f"{tag}: in use by {who} (a worker of an earlier compare); waiting")
            self.waiting.append((tag, run))
            return
        slot = self.free.pop()
        p = self.plan
        device = "cuda" if slot.gpus and run.config.run.device != "auto" else None
        job = RunJob(run, self.ev, p.launcher, p.nproc_per_node, self.threads, device)
        self.echo(f"{tag}: {start_line(run)} ... ({slot.describe()})")
        proc, log = _launch(run, slot, job, self.threads)
        self.running.append(_Worker(tag, run, slot, proc, log, time.perf_counter()))

    def _reap(self, todo: deque[tuple[str, RunSpec]], stopping: bool) -> None:
        for w in list(self.running):
            rc = w.proc.poll()
            if rc is not None:
                self.running.remove(w)
                w.log.close()
                self.free.append(w.slot)
                self._finish(w, rc, stopping, todo)

    def _finish(
        self, w: _Worker, rc: int, stopping: bool, todo: deque[tuple[str, RunSpec]]
    ) -> None:
        report, echo = self.report, self.echo
        record = read_record(w.run.out)
        if rc == EXIT_DONE:
            report.trained.append(w.run.name)
            echo(f"{w.tag}: {finish_line(record, time.perf_counter() - w.started, self.ev)}")
        elif rc == EXIT_BUSY and not stopping:  # taken by an earlier worker meanwhile
            self.waiting.append((w.tag, w.run))
        elif stopping or rc in (EXIT_INTERRUPTED, -signal.SIGINT):
            report.interrupted = f"stopped during {w.run.name}"
            echo(f"{w.tag}: interrupted; rerun the same command to resume")
        else:
            msg = record.error if record is not None and record.status == FAILED else None
            if msg is None:
                msg = f"worker exited with status {rc}"
                record_failure(w.run, msg)
            report.failed[w.run.name] = msg
            echo(f"{w.tag}: FAILED: {msg} (log: {w.run.out / LOG_FILE})")


def _stop(running: list[_Worker]) -> None:
    """One SIGINT to each worker, then wait; on a second Ctrl-C a second one, and wait."""
    for w in running:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGINT)
    try:
        for w in running:
            w.proc.wait()
    except KeyboardInterrupt:
        for w in running:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGINT)
        for w in running:
            w.proc.wait()
