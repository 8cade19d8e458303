"""``mimkit compare --launcher slurm``: every run of the grid a Slurm job, submitted with
submitit (an optional dependency: ``pip install 'mimkit[cluster]'``).

A job runs ``torchrun`` on each of its nodes (one process per GPU) and then, on its first
node, the run's evaluation, so that the driver needs no GPU. Submitting again is safe: a
complete run is skipped, a run whose job is still queued or running is waited for, not
submitted twice, and any other run is submitted again and resumes from its checkpoint. A
job that reaches its time limit or is preempted requeues itself (submitit's checkpointing)
and resumes the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from mimkit.compare.launch import Nodes, pretrain_torchrun
from mimkit.compare.record import COMPLETE, FAILED, read_record
from mimkit.compare.runner import Echo, GridReport, first_line, record_failure, runs_to_do
from mimkit.compare.settings import EvalSettings
from mimkit.compare.spec import RunSpec
from mimkit.compare.worker import EXIT_DONE, RunJob, execute, read_job, write_job
from mimkit.errors import ConfigError

JOB_RECORD = "slurm_job.json"
# Slurm states in which a job may still write to its run folder.
ACTIVE_STATES = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}
)


def import_submitit() -> ModuleType:
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "--launcher slurm needs submitit: pip install 'mimkit[cluster]'"
        ) from None
    return submitit


def parse_time(text: str) -> int:
    """Minutes (rounded up) from a Slurm time limit: ``minutes``, ``minutes:seconds``,
    ``hours:minutes:seconds``, ``days-hours``, ``days-hours:minutes`` or
    ``days-hours:minutes:seconds``."""
    days, _, rest = text.strip().rpartition("-")
    parts = rest.split(":")
    if not all(p.isdigit() for p in [*parts, *([days] if days else [])]) or len(parts) > 3:
        raise ConfigError(f"--time {text!r}: give minutes, HH:MM:SS or D-HH:MM:SS")
    nums = [int(p) for p in parts]
    if days:
        h, m, s = (nums + [0, 0])[:3]
    else:
        h, m, s = {1: (0, nums[0], 0), 2: (0, *nums), 3: tuple(nums)}[len(nums)]
    minutes = 24 * 60 * int(days or 0) + 60 * h + m + (1 if s else 0)
    if minutes < 1:
        raise ConfigError(f"--time {text!r} is shorter than a minute")
    return minutes


@dataclass
class SlurmOptions:
    folder: Path  # submitit's scripts, pickles and logs
    partition: str | None = None
    gpus_per_run: int = 1  # per node
    nodes_per_run: int = 1
    time_min: int = 24 * 60
    cpus_per_gpu: int = 8
    extra: dict[str, str] = field(default_factory=dict)  # more sbatch options
    wait: bool = True
    cluster: str = "slurm"  # submitit's "local" executor in tests

    @property
    def processes_per_node(self) -> int:
        return max(1, self.gpus_per_run)


class SlurmRun:
    """What one job runs (pickled by submitit): torchrun on every node, then the
    evaluation on node 0."""

    def __init__(self, job_path: str) -> None:
        self.job_path = job_path

    def __call__(self) -> int:
        import submitit

        env = submitit.JobEnvironment()
        job = read_job(self.job_path)
        digits = re.sub(r"\D", "", str(env.job_id)) or "0"
        nodes = Nodes(
            count=env.num_nodes,
            rank=env.node,
            master_addr=env.hostnames[0],
            master_port=20000 + int(digits) % 20000,  # jobs sharing a node do not collide
        )
        if nodes.rank != 0:
            pretrain_torchrun(job.run, job.nproc_per_node, nodes)
            return EXIT_DONE
        return execute(job, nodes, echo=lambda line: print(line, flush=True))

    def checkpoint(self) -> Any:
        """Time limit or preemption: requeue; the run resumes from its checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmRun(self.job_path))


def make_executor(submitit: ModuleType, opts: SlurmOptions) -> Any:
    executor = submitit.AutoExecutor(folder=opts.folder, cluster=opts.cluster)
    params: dict[str, Any] = {
        "name": "mimkit-compare",
        "timeout_min": opts.time_min,
        "nodes": opts.nodes_per_run,
        "tasks_per_node": 1,  # one torchrun per node, which starts a process per GPU
        "gpus_per_node": opts.gpus_per_run,
        "cpus_per_task": opts.cpus_per_gpu * opts.processes_per_node,
    }
    if opts.cluster == "slurm":
        params["slurm_partition"] = opts.partition
        params["slurm_signal_delay_s"] = 120  # time to save before the limit
        if opts.extra:
            params["slurm_additional_parameters"] = dict(opts.extra)
    executor.update_parameters(**params)
    return executor


def _record(run: RunSpec, job_id: str, opts: SlurmOptions) -> None:
    data = {"job_id": job_id, "cluster": opts.cluster, "folder": str(opts.folder)}
    (run.out / JOB_RECORD).write_text(json.dumps(data) + "\n")


def active_job(submitit: ModuleType, run: RunSpec, opts: SlurmOptions) -> Any | None:
    """The run's earlier Slurm job if it is still queued or running."""
    path = run.out / JOB_RECORD
    if opts.cluster != "slurm" or not path.is_file():
        return None  # a local job does not outlive the command that started it
    try:
        data = json.loads(path.read_text())
        job = submitit.SlurmJob(folder=data["folder"], job_id=str(data["job_id"]))
        return job if job.state in ACTIVE_STATES else None
    except (OSError, ValueError, KeyError):
        return None


@dataclass(frozen=True)
class Slurm:
    """Every run not complete yet a Slurm job; with ``opts.wait``, wait for the jobs (Ctrl-C
    while waiting leaves them running)."""

    opts: SlurmOptions

    def __call__(self, runs: list[RunSpec], ev: EvalSettings, echo: Echo) -> GridReport:
        opts = self.opts
        submitit = import_submitit()
        report = GridReport()
        todo = runs_to_do(runs, ev, report, echo)
        if not todo:
            return report
        opts.folder.mkdir(parents=True, exist_ok=True)
        executor = make_executor(submitit, opts)
        submitted: list[tuple[str, RunSpec, Any]] = []
        for tag, run in todo:
            job = active_job(submitit, run, opts)
            if job is not None:
                echo(f"{tag}: Slurm job {job.job_id} is {job.state.lower()} already; "
                     "not resubmitted")  # fmt: skip
            else:
                path = write_job(RunJob(run, ev, "torchrun", opts.processes_per_node))
                job = executor.submit(SlurmRun(str(path)))
                _record(run, str(job.job_id), opts)
                echo(f"{tag}: submitted as job {job.job_id}")
            submitted.append((tag, run, job))
        if not opts.wait:
            report.queued = [run.name for _, run, _ in submitted]
            return report
        try:
            for tag, run, job in submitted:
                _collect(tag, run, job, report, echo)
        except KeyboardInterrupt:
            echo("mimkit compare: the jobs keep running; rerun the same command to collect them")
            report.interrupted = "stopped waiting for the jobs"
        return report


def _collect(tag: str, run: RunSpec, job: Any, report: GridReport, echo: Echo) -> None:
    try:
        job.result()
        problem = None
    except Exception as err:  # submitit's job errors: failed, cancelled, timed out for good
        problem = first_line(err)
    record = read_record(run.out)
    if record is not None and record.status == COMPLETE:
        report.trained.append(run.name)
        echo(f"{tag}: job {job.job_id} complete")
        return
    msg = record.error if record is not None and record.status == FAILED else None
    if msg is None:
        msg = f"job {job.job_id} ended without a complete evaluation" + (
            f": {problem}" if problem else ""
        )
        record_failure(run, msg)
    report.failed[run.name] = msg
    echo(f"{tag}: FAILED: {msg} (logs in {Path(job.paths.stdout).parent})")
