"""Pretraining one run of a grid: in this process, or with torchrun in a child process
(one node or several), passing Ctrl-C on so that the child saves before it exits."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mimkit.compare.spec import RunSpec
from mimkit.errors import MimkitError


class CompareInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM during a run: what is finished is kept; rerun to resume. An
    interruption, not a user error (the command answers it with exit code 130)."""


class RunFailed(MimkitError):
    """One run could not be trained or evaluated; the grid goes on with the others."""


def pretrain_inprocess(run: RunSpec) -> None:
    from mimkit.ibot.pretrain import run_pretraining

    result = run_pretraining(run.config)
    if result.status == "non_finite":
        raise RunFailed(result.error or "non-finite values")
    if result.status in ("stopped", "interrupted", "knn_interrupted"):
        # a signal outside the steps (start-up, an evaluation) is a stop too, not a failure
        raise CompareInterrupted(f"stopped during {run.name} at step {result.step}")
    if result.status != "finished":
        raise RunFailed(f"pretraining ended with status {result.status!r}")


def write_run_config(run: RunSpec) -> Path:
    run.out.mkdir(parents=True, exist_ok=True)
    path = run.out / "config.yaml"
    path.write_text(yaml.safe_dump(run.config.to_dict(), sort_keys=False))
    return path


@dataclass(frozen=True)
class Nodes:
    """The nodes one torchrun pretraining spans (several in a multi-node Slurm job): their
    number, this node's rank and the rendezvous address of node 0."""

    count: int = 1
    rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500


def torchrun_command(
    config_path: Path, nproc_per_node: int, nodes: Nodes | None = None
) -> list[str]:
    # ``python -m torch.distributed.run`` is the ``torchrun`` entry point, without relying
    # on the script being on PATH.
    if nodes is None or nodes.count == 1:
        where = ["--standalone", f"--nproc_per_node={nproc_per_node}"]
    else:
        where = [
            f"--nnodes={nodes.count}",
            f"--node_rank={nodes.rank}",
            f"--nproc_per_node={nproc_per_node}",
            f"--master_addr={nodes.master_addr}",
            f"--master_port={nodes.master_port}",
        ]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *where,
        "-m",
        "mimkit",
        "pretrain",
        "--config",
        str(config_path),
        "--no-knn",
    ]


def run_child(cmd: list[str], **popen_kwargs: Any) -> int:
    """Run ``cmd`` in a session of its own, so that a Ctrl-C reaches it once, from here: on
    Ctrl-C (or SIGTERM) pass one SIGINT on and wait while it saves and exits (its status is
    returned); a second Ctrl-C passes a second one, which stops it at once."""
    proc = subprocess.Popen(cmd, start_new_session=True, **popen_kwargs)
    with forward_interrupts():
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait()
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGINT)
                proc.wait()
            raise


@contextlib.contextmanager
def forward_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt here, like Ctrl-C (main thread only)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def pretrain_torchrun(run: RunSpec, nproc_per_node: int, nodes: Nodes | None = None) -> None:
    cmd = torchrun_command(write_run_config(run), nproc_per_node, nodes)
    try:
        rc = run_child(cmd)
    except KeyboardInterrupt:
        raise CompareInterrupted(f"stopped during {run.name}") from None
    if rc in (130, -signal.SIGINT):
        raise CompareInterrupted(f"stopped during {run.name}")
    if rc != 0:
        raise RunFailed(f"torchrun exited with status {rc} ({' '.join(cmd)})")


# Where a run's pretraining runs (``--launcher``): this process, or torchrun children.
PRETRAINERS: dict[str, Callable[[RunSpec, int, Nodes | None], None]] = {
    "inprocess": lambda run, nproc_per_node, nodes: pretrain_inprocess(run),
    "torchrun": pretrain_torchrun,
}


def pretrain(run: RunSpec, launcher: str, nproc_per_node: int, nodes: Nodes | None) -> None:
    """Pretrain (or resume) ``run`` with the launcher named ``launcher``."""
    PRETRAINERS[launcher](run, nproc_per_node, nodes)
