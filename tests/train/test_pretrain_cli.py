"""``mimkit pretrain`` from the command line: errors before work, Ctrl-C, the shipped configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mimkit.cli import main
from mimkit.config import shipped_config_names
from mimkit.ibot.config import load_config
from mimkit.train.checkpoint import load_checkpoint

TINY = [
    "--arch",
    "vit_nano",
    "--img-size",
    "16",
    "--patch-size",
    "4",
    "--local-crops",
    "1",
    "--set",
    "data.local_crop_size=8",
    "--subset",
    "4",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--set",
    "run.progress=false",
    "--set",
    "run.tensorboard=false",
]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "/no/such/folder"], "does not exist"),
        (["--mask", "sideways"], "sideways"),
        (["--mask", "high@raw:7"], "out of range"),
        (["--mask", "high", "low", "random"], "3 mask strategies"),
        (["--mask", "high@power:-1:-2"], "power"),
        (["--arch", "vit_huge"], "unknown arch"),
        (["--set", "optim.nope=1"], "optim.nope"),
        (["--set", "masking.ratio=[0.6,0.2]"], "ratio"),
        (["--config", "no_such_config"], "no_such_config"),
        (["--lambda3", "1", "--contrastive-k", "99"], "contrastive_k"),
        (["--workers", "-1"], "data.num_workers must be >= 0"),
        (["--set", "run.log_every_steps=0"], "run.log_every_steps must be >= 1"),
        (["--patch-size", "0"], "model.patch_size must be >= 1"),
        (["--lr", "-1"], "optim.lr must be > 0"),
        (["--lr", "nan"], "optim.lr must be a finite number"),
        (["--set", "optim.clip_grad=nan"], "optim.clip_grad must be a finite number"),
        (["--set", "loss.teacher_temp=0"], "loss.teacher_temp must be > 0"),
        (["--set", "optim.warmup_epochs=-1"], "optim.warmup_epochs must be >= 0"),
        (["--set", "optim.clip_mode=layer"], "optim.clip_mode"),
        (["--set", "optim.lr_warmup=cosine"], "optim.lr_warmup"),
        (["--set", "loss.teacher_temp_warmup=batch"], "loss.teacher_temp_warmup"),
        (
            ["--set", "loss.teacher_temp_warmup=epoch"]
            + ["--set", "loss.warmup_teacher_temp_epochs=1.5"],
            "whole number",
        ),
        (["--set", "masking.ratio_per=epoch"], "ratio_per"),
        (["--set", "masking.hint_reveal=never"], "hint_reveal"),
        (["--mask", "mix@adv"], "'adv' goes with mode sample or high only"),
        (["--mask", "mix:0:1:wave"], "schedule must be one of"),
        (["--mask", "sample:-1"], "temperature must be > 0"),
        (["--set", "masking.alpha=[0,2]"], "masking.alpha"),
        (["--set", "masking.alpha=[0.1,0.4]", "--set", "masking.alpha_schedule=constant"],
         "a constant schedule has one value"),
        (["--set", "loss.adv_estimator=gumbel"], "loss.adv_estimator"),
        (["--set", "loss.pred_grad=tokens"], "loss.pred_grad"),
        (["--set", "loss.adv_lambda=[-2,1]"], "loss.adv_lambda"),
    ],
)
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    code = main(["pretrain", *TINY, "--output-dir", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()  # nothing was written


def test_empty_folder_is_refused(tmp_path, capsys):
    (tmp_path / "data" / "train").mkdir(parents=True)
    code = main(
        ["pretrain", *TINY, "--data", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out")]
    )
    assert code == 2 and "no images" in capsys.readouterr().err


def test_short_run_then_resume_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "pretrain",
                *TINY,
                "--output-dir",
                str(out),
                "--epochs",
                "1",
                "--max-steps",
                "2",
                "--no-knn",
            ]
        )
        == 0
    )
    assert main(["pretrain", *TINY, "--output-dir", str(out), "--epochs", "1", "--no-knn"]) == 0
    text = capsys.readouterr().out
    assert "resuming at step 2" in text and "finished at step 5" in text
    saved = load_config(str(out / "config.yaml"))
    assert saved.model.arch == "vit_nano" and saved.optim.epochs == 1
    assert load_checkpoint(out / "checkpoint.pth")["step"] == 5


def test_resume_from_a_named_checkpoint_into_another_folder(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["pretrain", *TINY, "--output-dir", str(first), "--epochs", "1",
                 "--max-steps", "3", "--no-knn"]) == 0
    assert main(["pretrain", *TINY, "--output-dir", str(second), "--epochs", "1", "--no-knn",
                 "--resume", str(first / "checkpoint.pth")]) == 0
    assert "resuming at step 3" in capsys.readouterr().out
    assert load_checkpoint(second / "checkpoint.pth")["step"] == 5
    assert main(["pretrain", *TINY, "--output-dir", str(second), "--no-knn",
                 "--resume", str(tmp_path / "nope.pth")]) == 2


def test_every_shipped_config_loads():
    names = shipped_config_names()
    assert "fashion_mnist_vit_mini" in names and "imagenet20_vit_small_thesis" in names
    for name in names:
        cfg = load_config(name)
        assert cfg.masking.strategies


def test_thesis_config_matches_the_recipe():
    cfg = load_config("imagenet20_vit_small_thesis")
    assert cfg.model.arch == "vit_small" and cfg.model.img_size == 224
    assert cfg.masking.strategies == ["high@raw:11", "high@raw:4"]
    assert (cfg.data.global_crops, cfg.data.local_crops, cfg.optim.epochs) == (2, 6, 100)
    assert cfg.data.subset == pytest.approx(0.2)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits(tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "mimkit",
        "pretrain",
        *TINY,
        "--output-dir",
        str(out),
        "--epochs",
        "50",
        "--set",
        "run.log_every_steps=1",
        "--no-knn",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log = out / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and log.read_text().strip()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "rerun to resume" in stdout
    state = load_checkpoint(out / "checkpoint.pth")
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert state["step"] >= 1 and state["step"] == max(steps)


@pytest.mark.slow
def test_one_run_per_output_folder_and_no_stale_lock_after_kill(tmp_path, capsys):
    out = tmp_path / "out"
    first = subprocess.Popen(
        [sys.executable, "-m", "mimkit", "pretrain", *TINY, "--output-dir", str(out)]
        + ["--epochs", "50", "--set", "run.save_every_steps=2", "--no-knn"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ckpt = out / "checkpoint.pth"
        deadline = time.time() + 120
        while time.time() < deadline and not ckpt.exists():
            time.sleep(0.2)
        # A second run on the same folder is refused in one line, naming the holder.
        code = main(["pretrain", *TINY, "--output-dir", str(out), "--no-knn"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert f"output folder {out} is in use by another mimkit run (PID {first.pid})" in err
        assert first.poll() is None  # the first run goes on, its checkpoint still loads
        assert load_checkpoint(ckpt)["step"] >= 2
    finally:
        first.kill()  # SIGKILL: no chance to clean up
        first.wait()
    # The kill released the lock: the next run resumes the killed one's checkpoint.
    step = load_checkpoint(ckpt)["step"]
    code = main(["pretrain", *TINY, "--output-dir", str(out), "--max-steps", str(step + 1)])
    assert code == 0, capsys.readouterr().err
    assert load_checkpoint(ckpt)["step"] == step + 1
    assert not list(out.glob(".*.tmp-*"))  # a save the kill cut short left nothing behind


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("precious")
    assert main(["pretrain", *TINY, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mimkit pretrain: error: output folder {out} is a file, not a folder"
    assert out.read_text() == "precious"


def test_final_knn_line_names_k_and_the_reference_figures(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["pretrain", *TINY, "--output-dir", str(out), "--epochs", "1"]) == 0
    text = capsys.readouterr().out
    line = next(s for s in text.splitlines() if s.startswith("k-NN top-1"))
    assert "k=20" in line and "2000" in line and "40 train images" in line
    assert "raw pixels" in text and "random weights" in text
    saved = json.loads((out / "reference_knn.json").read_text())
    assert set(saved["top1"]) == {"raw_pixels", "random_weights"}
