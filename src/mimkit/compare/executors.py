"""How a grid's runs are carried out: one after the other in this process, N at a time in
worker processes (``--jobs N``, :mod:`mimkit.compare.pool`), or as Slurm jobs
(``--launcher slurm``, :mod:`mimkit.compare.slurm`). Every executor is an
:class:`Executor`; :data:`EXECUTORS` is the one table the command picks from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mimkit.compare.launch import CompareInterrupted, RunFailed
from mimkit.compare.pool import Parallel, plan_slots
from mimkit.compare.runner import (
    Echo,
    GridReport,
    RunBusy,
    finish_line,
    first_line,
    record_failure,
    run_one,
    runs_to_do,
    start_line,
    wait_while_busy,
)
from mimkit.compare.settings import EvalSettings
from mimkit.compare.slurm import Slurm, SlurmOptions
from mimkit.compare.spec import RunSpec
from mimkit.errors import MimkitError


class Executor(Protocol):
    def __call__(self, runs: list[RunSpec], ev: EvalSettings, echo: Echo) -> GridReport:
        """Carry out every run of ``runs`` not complete yet; a failed run is recorded and
        the others go on."""


@dataclass(frozen=True)
class LaunchOptions:
    """What the command line chose: the pretraining launcher (``inprocess``, ``torchrun``
    or ``slurm``), processes per run, runs at once, and the Slurm options."""

    launcher: str = "inprocess"
    nproc_per_node: int = 1
    jobs: int = 1
    slurm: SlurmOptions | None = None  # with --launcher slurm

    @property
    def kind(self) -> str:
        if self.launcher == "slurm":
            return "slurm"
        return "jobs" if self.jobs > 1 else "sequential"


@dataclass(frozen=True)
class Sequential:
    """One run after the other, in this process (pretraining in it or in torchrun)."""

    launcher: str = "inprocess"
    nproc_per_node: int = 1

    @classmethod
    def plan(cls, opts: LaunchOptions, runs: list[RunSpec]) -> Sequential:
        return cls(opts.launcher, opts.nproc_per_node)

    def __call__(self, runs: list[RunSpec], ev: EvalSettings, echo: Echo) -> GridReport:
        report = GridReport()
        for tag, run in runs_to_do(runs, ev, report, echo):
            t0 = time.perf_counter()
            try:
                record = self._run(run, ev, tag, echo)
            except (CompareInterrupted, KeyboardInterrupt) as err:
                report.interrupted = str(err) or f"stopped during {run.name}"
                echo(f"{tag}: interrupted; rerun the same command to resume")
                break
            except (RunFailed, MimkitError) as err:
                msg = first_line(err)
                report.failed[run.name] = msg
                record_failure(run, msg)
                echo(f"{tag}: FAILED: {msg}")
                continue
            report.trained.append(run.name)
            echo(f"{tag}: {finish_line(record, time.perf_counter() - t0, ev)}")
        return report

    def _run(self, run: RunSpec, ev: EvalSettings, tag: str, echo: Echo):
        while True:
            wait_while_busy(run, tag, echo)
            echo(f"{tag}: {start_line(run)} ...")
            try:
                return run_one(run, ev, self.launcher, self.nproc_per_node)
            except RunBusy:  # taken between the wait and the start: wait again
                continue


def _parallel(opts: LaunchOptions, runs: list[RunSpec]) -> Parallel:
    device = runs[0].config.run.device if runs else "cpu"
    slots = plan_slots(device, opts.jobs, opts.nproc_per_node)
    return Parallel(slots, opts.launcher, opts.nproc_per_node)


def _slurm(opts: LaunchOptions, runs: list[RunSpec]) -> Slurm:
    if not isinstance(opts.slurm, SlurmOptions):
        raise TypeError("--launcher slurm needs SlurmOptions")
    return Slurm(opts.slurm)


# kind -> how to build it from the options (all checks happen there, before any work).
EXECUTORS: dict[str, Callable[[LaunchOptions, list[RunSpec]], Executor]] = {
    "sequential": Sequential.plan,
    "jobs": _parallel,
    "slurm": _slurm,
}


def plan_executor(opts: LaunchOptions, runs: list[RunSpec]) -> Executor:
    return EXECUTORS[opts.kind](opts, runs)
