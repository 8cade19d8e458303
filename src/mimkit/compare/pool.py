"""``mimkit compare --jobs N``: N runs of a grid at once on one machine, each a worker
process (:mod:`mimkit.compare.worker`) logging to ``<run>/compare.log``.

On the CPU the cores are split between the runs (a config's ``run.threads`` wins when it
pins one); with GPUs every run gets its own device(s) through ``CUDA_VISIBLE_DEVICES``.
Ctrl-C (or SIGTERM) asks every running worker once to save and stop, and waits; a second
Ctrl-C stops them at once. Rerunning resumes, as with one run at a time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from mimkit.compare.launch import forward_interrupts
from mimkit.compare.runner import (
    GridReport,
    finish_line,
    read_eval,
    record_failure,
    runs_to_do,
    start_line,
)
from mimkit.compare.spec import CompareConfig, RunSpec
from mimkit.compare.worker import EXIT_DONE, EXIT_INTERRUPTED, RunJob, write_job
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


def _start(run: RunSpec, slot: Slot, job: RunJob, threads: int) -> tuple[subprocess.Popen, IO[str]]:
    path = write_job(job)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if slot.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(slot.gpus)
    log = (run.out / LOG_FILE).open("a")
    cmd = [sys.executable, "-m", "mimkit.compare.worker", str(path)]
    # A session of its own: Ctrl-C in the terminal reaches the driver only, which passes it
    # on once (a worker stopped twice would not save).
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    return proc, log


def run_parallel(
    cc: CompareConfig,
    runs: list[RunSpec],
    slots: list[Slot],
    *,
    launcher: str = "inprocess",
    nproc_per_node: int = 1,
    echo: Callable[[str], None] = print,
) -> GridReport:
    """Every run of ``runs`` not complete yet, ``len(slots)`` at a time, in grid order."""
    ev = cc.eval
    report = GridReport()
    todo = deque(runs_to_do(runs, ev, report, echo))
    if not todo:
        return report
    first = todo[0][1].config
    threads = threads_per_run(first.run.threads, len(slots))
    echo(
        f"mimkit compare: {len(slots)} runs at once, {threads} torch thread(s) each; "
        f"logs in <run>/{LOG_FILE}"
    )
    free = list(reversed(slots))
    running: list[_Worker] = []

    def finish(w: _Worker, rc: int, stopping: bool) -> None:
        w.log.close()
        free.append(w.slot)
        state = read_eval(w.run.out)
        if rc == EXIT_DONE:
            report.trained.append(w.run.name)
            echo(f"{w.tag}: {finish_line(state, time.perf_counter() - w.started, ev.shown_k)}")
        elif stopping or rc in (EXIT_INTERRUPTED, -signal.SIGINT):
            report.interrupted = f"stopped during {w.run.name}"
            echo(f"{w.tag}: interrupted; rerun the same command to resume")
        else:
            msg = state.get("error") if state.get("status") == "failed" else None
            if msg is None:
                msg = f"worker exited with status {rc}"
                record_failure(w.run, msg)
            report.failed[w.run.name] = msg
            echo(f"{w.tag}: FAILED: {msg} (log: {w.run.out / LOG_FILE})")

    def reap(stopping: bool) -> None:
        for w in list(running):
            rc = w.proc.poll()
            if rc is not None:
                running.remove(w)
                finish(w, rc, stopping)

    with forward_interrupts():
        try:
            while todo or running:
                while todo and free:
                    tag, run = todo.popleft()
                    slot = free.pop()
                    device = "cuda" if slot.gpus and run.config.run.device != "auto" else None
                    job = RunJob(run, ev, launcher, nproc_per_node, threads, device)
                    echo(f"{tag}: {start_line(run)} ... ({slot.describe()})")
                    proc, log = _start(run, slot, job, threads)
                    running.append(_Worker(tag, run, slot, proc, log, time.perf_counter()))
                time.sleep(POLL_SECONDS)
                reap(stopping=False)
        except KeyboardInterrupt:
            echo(
                "mimkit compare: stopping; running runs save a checkpoint first "
                "(Ctrl-C again to stop them at once)"
            )
            report.interrupted = "stopped"
            _stop(running)
            reap(stopping=True)
    return report


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
