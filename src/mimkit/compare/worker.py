"""One run of a grid in a process of its own: what ``mimkit compare --jobs N`` starts N of
at once (``python -m mimkit.compare.run_job <run>/compare_job.json``) and what each Slurm
job runs. The job file holds everything the run needs: its full pretraining config, the
evaluation settings and how to launch it. A worker started by a driver stops (saving first,
as on Ctrl-C) when that driver dies, however it dies: see :func:`stop_with_driver`."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimkit.compare.launch import CompareInterrupted, Nodes, RunFailed
from mimkit.compare.runner import RunBusy, first_line, record_failure, run_one
from mimkit.compare.settings import EvalSettings
from mimkit.compare.spec import RunSpec, Strategy
from mimkit.errors import MimkitError
from mimkit.ibot.config import PretrainConfig

JOB_FILE = "compare_job.json"
EXIT_DONE, EXIT_FAILED, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 75, 130
DRIVER_PID = "MIMKIT_COMPARE_DRIVER"  # environment: the PID of the driver that started us
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class RunJob:
    run: RunSpec
    ev: EvalSettings
    launcher: str = "inprocess"  # or "torchrun"
    nproc_per_node: int = 1
    threads: int | None = None  # torch threads of this run (None: the config's)
    device: str | None = None  # replaces run.device, e.g. "cuda" where CUDA_VISIBLE_DEVICES picks

    def to_json(self) -> dict[str, Any]:
        r = self.run
        return {
            "run": {
                "name": r.name,
                "seed": r.seed,
                "epochs": r.epochs,
                "every": r.every,
                "strategy": dataclasses.asdict(r.strategy),
                "config": r.config.to_dict(),
            },
            "eval": self.ev.to_dict(),
            "launcher": self.launcher,
            "nproc_per_node": self.nproc_per_node,
            "threads": self.threads,
            "device": self.device,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunJob:
        r = data["run"]
        s = dict(r["strategy"])
        s["overrides"] = [tuple(kv) for kv in s["overrides"]]
        run = RunSpec(
            strategy=Strategy(**s),
            seed=int(r["seed"]),
            epochs=int(r["epochs"]),
            name=r["name"],
            config=PretrainConfig.from_dict(r["config"]),
            every=int(r["every"]),
        )
        return cls(
            run=run,
            ev=EvalSettings.from_dict(data["eval"]),
            launcher=data["launcher"],
            nproc_per_node=int(data["nproc_per_node"]),
            threads=data.get("threads"),
            device=data.get("device"),
        )


def write_job(job: RunJob) -> Path:
    path = job.run.out / JOB_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{JOB_FILE}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(job.to_json(), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def read_job(path: str | Path) -> RunJob:
    return RunJob.from_json(json.loads(Path(path).read_text()))


def execute(job: RunJob, nodes: Nodes | None = None, echo: Callable[[str], None] = print) -> int:
    """Train (or resume) and evaluate the run in this process: ``EXIT_DONE``,
    ``EXIT_FAILED`` (the reason recorded in its eval.json) or ``EXIT_INTERRUPTED``."""
    cfg = job.run.config
    if job.threads:
        import torch

        cfg.run.threads = job.threads  # not part of the run's identity: resuming is fine
        torch.set_num_threads(job.threads)  # evaluation too
    if job.device:
        cfg.run.device = job.device
    try:
        run_one(job.run, job.ev, job.launcher, job.nproc_per_node, nodes)
    except RunBusy as err:
        echo(f"{job.run.name}: not started: {err}")
        return EXIT_BUSY
    except (CompareInterrupted, KeyboardInterrupt):
        echo(f"{job.run.name}: interrupted")
        return EXIT_INTERRUPTED
    except (RunFailed, MimkitError) as err:
        msg = first_line(err)
        record_failure(job.run, msg)
        echo(f"{job.run.name}: FAILED: {msg}")
        return EXIT_FAILED
    echo(f"{job.run.name}: complete")
    return EXIT_DONE


def stop_with_driver(driver: int) -> None:
    """When the driver process ``driver`` (our parent) ends, however it ends (kill -9
    included), this process gets SIGINT: it saves and stops as on Ctrl-C. Linux tells us
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere a thread watches for a new parent."""
    if os.getppid() != driver:  # it died before we got here
        os.kill(os.getpid(), signal.SIGINT)
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0) == 0:
            if os.getppid() != driver:  # it died between the check and the call
                os.kill(os.getpid(), signal.SIGINT)
            return

    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="driver-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mimkit.compare.run_job RUN_DIR/compare_job.json", file=sys.stderr)
        return 2
    driver = os.environ.get(DRIVER_PID, "")
    try:
        if driver.isdigit():
            stop_with_driver(int(driver))
        return execute(read_job(args[0]), echo=lambda line: print(line, flush=True))
    except KeyboardInterrupt:  # the driver went away before the run started
        return EXIT_INTERRUPTED
