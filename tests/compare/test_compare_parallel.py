"""Grids run wider: ``--jobs 2`` (two worker processes, Ctrl-C, resume) and the Slurm
launcher on submitit's local executor (torchrun inside the job, resubmission)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from compare_fixtures import tiny_compare

from mimkit.compare import build_grid, parse_compare_config, read_record
from mimkit.compare.slurm import Slurm, SlurmOptions
from mimkit.ibot.config import PretrainConfig
from mimkit.ibot.pretrain import run_pretraining
from mimkit.train.checkpoint import load_checkpoint
from mimkit.train.logging import read_log

EVAL = {"knn": {"every": 1, "ks": [5]}, "linear": False}


def _compare(cfg: Path, out: Path, *more: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mimkit", "compare", "--config", str(cfg)]
    cmd += ["--output-dir", str(out), "--jobs", "2", *more]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_jobs_two_at_once_stop_on_ctrl_c_and_resume(tmp_path: Path, write_compare):
    # 40 epochs of 5 steps: long enough to be stopped mid-training
    data = tiny_compare(seeds=[0], epochs=40, eval={**EVAL, "knn": {"every": 40, "ks": [5]}})
    data["overrides"]["run.log_every_steps"] = 1000  # no step records in the first attempt
    cfg = write_compare(data)
    out = tmp_path / "out"
    runs = [out / "runs" / "random-s0", out / "runs" / "attmask-high-s0"]
    proc = _compare(cfg, out)
    deadline = time.monotonic() + 240
    while not all(read_log(r, "epoch") for r in runs):  # both runs are training
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    text = proc.communicate(timeout=240)[0]
    assert proc.returncode == 130, text
    assert "2 runs at once" in text and "stopping" in text
    for name in ("random-s0", "attmask-high-s0"):
        assert f"{name}: interrupted; rerun the same command to resume" in text
    stopped_at = {}
    for r in runs:
        stopped_at[r] = load_checkpoint(r / "checkpoint.pth")["step"]  # saved on the way out
        assert 5 <= stopped_at[r] < 200
        record = read_record(r)
        assert record is None or record.status != "complete"

    # Logging every step now (not part of a run's identity) shows where training picked up.
    proc = _compare(cfg, out, "--set", "run.log_every_steps=1")
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, text
    assert "2 runs trained/evaluated, 0 skipped" in text
    for r in runs:
        assert json.loads((r / "eval.json").read_text())["status"] == "complete"
        # (The stopped attempt logged its last step, the one it saved.)
        assert [s["step"] for s in read_log(r, "step")] == list(range(stopped_at[r], 201))
        assert read_log(r, "epoch")[-1]["epoch"] == 40
        log = (r / "compare.log").read_text()
        assert "complete" in log
        assert "RuntimeWarning" not in log  # the worker module is not run twice


@pytest.mark.slow
def test_slurm_launcher_on_the_local_executor(tmp_path: Path):
    data = tiny_compare(seeds=[0], epochs=1, eval=EVAL)
    data["strategies"] = data["strategies"][:1]
    cc = parse_compare_config(data)
    [run] = build_grid(cc, tmp_path / "out")
    # An earlier attempt stopped after 2 of its 5 steps, logging every step.
    partial = PretrainConfig.from_dict(run.config.to_dict())
    partial.run.max_steps, partial.run.log_every_steps = 2, 1
    assert run_pretraining(partial).step == 2

    opts = SlurmOptions(tmp_path / "slurm", gpus_per_run=0, time_min=10, cluster="local")
    lines: list[str] = []
    report = Slurm(opts)([run], cc.eval, lines.append)
    assert report.trained == [run.name] and not report.failed, lines
    assert "submitted as job" in lines[0]
    job_id = json.loads((run.out / "slurm_job.json").read_text())["job_id"]
    job_log = (opts.folder / f"{job_id}_0_log.out").read_text()
    assert "mimkit pretrain:" in job_log  # torchrun ran mimkit pretrain inside the job
    assert "resuming at step 2" in job_log
    assert json.loads((run.out / "eval.json").read_text())["status"] == "complete"
    # Resumed from step 2: the earlier attempt's step records were kept, not redone; the
    # job logged its last step (a run's last step is always logged).
    assert [r["step"] for r in read_log(run.out, "step")] == [1, 2, 5]
    assert load_checkpoint(run.out / "checkpoint.pth")["step"] == 5

    lines.clear()  # submitting again: the complete run is skipped, nothing is submitted
    report = Slurm(opts)([run], cc.eval, lines.append)
    assert report.skipped == [run.name] and not report.trained
    assert not any("submitted" in line for line in lines)
