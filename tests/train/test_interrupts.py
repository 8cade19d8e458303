"""Ctrl-C during a checkpoint write or the final k-NN: one line, exit 130, and a whole
checkpoint to resume from. The signals are real SIGINTs sent to this process."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from mimkit.cli import main
from mimkit.evaluate.online import OnlineKnnHook
from mimkit.train.checkpoint import TMP_MARK, load_checkpoint

# vit_nano on 40 embedded images: 5 steps per epoch.
TINY = ["--arch", "vit_nano", "--img-size", "16", "--patch-size", "4", "--local-crops", "1"]
TINY += ["--subset", "4", "--batch-size", "8", "--workers", "0", "--device", "cpu"]
TINY += ["--set", "run.progress=false", "--set", "run.tensorboard=false"]


@pytest.mark.parametrize(("signals", "kept_step", "line"), [
    (1, 2, "stopped at step 2; rerun to resume."),  # the save finishes, then the run stops
    (2, 1, "interrupted; the checkpoint of step 1 is whole: rerun to resume."),
])
def test_ctrl_c_during_a_checkpoint_write(tmp_path, capsys, monkeypatch, signals, kept_step, line):
    out = tmp_path / "out"
    real_save, calls = torch.save, []

    def save_interrupted_on_the_second_call(obj, f, *args, **kwargs):
        calls.append(1)
        real_save(obj, f, *args, **kwargs)
        if len(calls) == 2:  # the checkpoint of step 2: written, not yet in place
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(torch, "save", save_interrupted_on_the_second_call)
    every_step = ["--set", "run.save_every_steps=1", "--no-knn"]
    code = main(["pretrain", *TINY, "--output-dir", str(out), *every_step])
    monkeypatch.undo()
    printed = capsys.readouterr()
    assert code == 130, printed.err
    assert printed.out.strip().splitlines()[-1] == f"mimkit pretrain: {line}"
    assert "Traceback" not in printed.err
    assert load_checkpoint(out / "checkpoint.pth")["step"] == kept_step
    assert not [p for p in out.iterdir() if TMP_MARK in p.name]
    # The next run resumes from the kept state.
    assert main(["pretrain", *TINY, "--output-dir", str(out), "--max-steps", "3", "--no-knn"]) == 0
    assert f"resuming at step {kept_step}" in capsys.readouterr().out
    assert load_checkpoint(out / "checkpoint.pth")["step"] == 3


def test_ctrl_c_during_the_final_knn(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    real_call = OnlineKnnHook.__call__

    def interrupted_knn(self, backbone, device):
        os.kill(os.getpid(), signal.SIGINT)  # arrives as the k-NN starts
        return real_call(self, backbone, device)

    # Online k-NN is off in these runs: the only k-NN is the final one.
    monkeypatch.setattr(OnlineKnnHook, "__call__", interrupted_knn)
    code = main(["pretrain", *TINY, "--output-dir", str(out), "--epochs", "1"])
    printed = capsys.readouterr()
    assert code == 130, printed.err
    last = printed.out.strip().splitlines()[-1]
    assert last.startswith("mimkit pretrain: finished at step 5 and saved; the final k-NN")
    assert f"mimkit knn --checkpoint {out / 'checkpoint.pth'}" in last
    assert "Traceback" not in printed.err
    assert load_checkpoint(out / "checkpoint.pth")["step"] == 5
    assert not (out / "knn_final.json").exists()
