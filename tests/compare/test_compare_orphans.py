"""A ``mimkit compare --jobs N`` driver killed with SIGKILL takes its workers with it (they
save and stop), and a rerun waits for a run still in use by an earlier worker instead of
failing it; ``mimkit compare`` on a plain image folder."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from compare_fixtures import tiny_compare
from PIL import Image

from mimkit.cli import main
from mimkit.compare import read_record
from mimkit.compare.runner import RUN_LOCK
from mimkit.train.checkpoint import load_checkpoint
from mimkit.train.logging import read_log

QUICK_EVAL = {"knn": {"every": 40, "ks": [5]}, "linear": False, "diagnostics": False}


def _compare(cfg: Path, out: Path, *more: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mimkit", "compare", "--config", str(cfg)]
    cmd += ["--output-dir", str(out), *more]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _hold(run_dir: Path, release: Path) -> subprocess.Popen:
    """Another process working on ``run_dir``, as a worker of an earlier compare would,
    until the file ``release`` appears."""
    code = (
        "import sys, time, pathlib; from mimkit.runs.lock import FolderLock; "
        f"lock = FolderLock(sys.argv[1], name={RUN_LOCK!r}).acquire(); print('held', flush=True)\n"
        "while not pathlib.Path(sys.argv[2]).exists(): time.sleep(0.05)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir), str(release)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _read_until(proc: subprocess.Popen, text: str, seen: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} never printed:\n{''.join(seen)}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process states")
def test_killing_the_driver_stops_its_workers_and_a_rerun_finishes(tmp_path, write_compare):
    data = tiny_compare(seeds=[0], epochs=40, eval=QUICK_EVAL)
    data["overrides"]["run.log_every_steps"] = 1000
    cfg = write_compare(data)
    out = tmp_path / "out"
    runs = [out / "runs" / "random-s0", out / "runs" / "attmask-high-s0"]
    driver = _compare(cfg, out, "--jobs", "2")
    deadline = time.monotonic() + 240
    while not all(read_log(r, "epoch") for r in runs):  # both workers are training
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    workers = [int((r / RUN_LOCK).read_text().split()[0]) for r in runs]
    assert all(_alive(pid) for pid in workers) and driver.pid not in workers
    driver.kill()  # SIGKILL: the driver gets no chance to stop anything
    driver.communicate(timeout=60)
    deadline = time.monotonic() + 120
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "the workers outlived their driver"
        time.sleep(0.2)
    for r in runs:  # each saved on its way out, and is not complete
        assert 5 <= load_checkpoint(r / "checkpoint.pth")["step"] < 200
        record = read_record(r)
        assert record is None or record.status == "partial"

    rerun = _compare(cfg, out, "--jobs", "2")
    text = rerun.communicate(timeout=400)[0]
    assert rerun.returncode == 0, text
    assert "FAILED" not in text and "2 runs trained/evaluated, 0 skipped, 0 failed" in text
    with (out / "summary.csv").open() as f:
        assert {r["strategy"]: r["n_seeds"] for r in csv.DictReader(f)} == {
            "Random": "1",
            "AttMask-High": "1",
        }


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_rerun_waits_for_a_run_in_use(tmp_path, write_compare, jobs):
    data = tiny_compare(seeds=[0], epochs=1, eval=QUICK_EVAL)
    out = tmp_path / "out"
    held = out / "runs" / "random-s0"
    held.mkdir(parents=True)
    release = tmp_path / "release"
    holder = _hold(held, release)
    driver = _compare(write_compare(data), out, "--jobs", jobs)
    seen: list[str] = []
    _read_until(driver, f"random-s0: in use by PID {holder.pid}", seen)
    if jobs == "2":  # the other run goes on meanwhile
        _read_until(driver, "attmask-high-s0: finished", seen)
    assert "random-s0: finished" not in "".join(seen)
    release.touch()
    text = "".join(seen) + driver.communicate(timeout=300)[0]
    holder.wait(timeout=30)
    assert driver.returncode == 0, text
    assert "random-s0: finished" in text and "FAILED" not in text
    assert "2 runs trained/evaluated, 0 skipped, 0 failed" in text
    assert all(read_record(out / "runs" / n).status == "complete" for n in os.listdir(out / "runs"))


def test_compare_on_a_plain_image_folder(tmp_path, write_compare):
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for cls in ("cats", "dogs"):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)  # not square
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    data = tiny_compare(seeds=[0], epochs=1)
    # 8 train images, batch 8: one step. (batch_augment: the base config's array-only path)
    data["overrides"].update({"data.dataset": str(root), "data.batch_augment": False})
    data["eval"] = {"knn": {"ks": [3]}, "fewshot": {"shots": [1], "draws": 2}}
    out = tmp_path / "out"
    assert main(["compare", "--config", str(write_compare(data)), "--output-dir", str(out)]) == 0
    for name in ("random-s0", "attmask-high-s0"):
        record = read_record(out / "runs" / name)
        assert record.status == "complete"
        final = record.epochs_eval[1]
        assert 0 <= final.results["knn:cls"]["top1_k3"] <= 100
        values = final.results["diagnostics"]  # no object rule for a folder of photos
        assert math.isnan(values["object_coverage"]) and values["hardness"] > 0
        assert load_checkpoint(out / "runs" / name / "checkpoint.pth")["step"] == 1
    assert "| Random | `random` | 1 |" in (out / "summary.md").read_text()
