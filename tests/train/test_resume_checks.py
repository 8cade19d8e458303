"""What a resumed or refused pretraining run must do (issue 19's probe): refuse changed
settings by name, never leave traces of a refused run, log its last step, survive a damaged
log, name non-finite weights, and say "disk full" in one line."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from PIL import Image

from mimkit.cli import main
from mimkit.train.checkpoint import load_checkpoint, save_atomic
from mimkit.train.logging import read_log

TINY = ["--arch", "vit_nano", "--img-size", "16", "--patch-size", "4", "--local-crops", "0"]
TINY += ["--subset", "4", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--no-knn"]
TINY += ["--set", "run.progress=false", "--set", "run.tensorboard=false", "--set", "run.threads=1"]


def pretrain(out: Path, *extra: str) -> int:
    return main(["pretrain", *TINY, "--output-dir", str(out), *extra])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("mimkit pretrain: error:") and "\n" not in err, err
    return err


@pytest.fixture
def stopped_run(tmp_path, capsys) -> Path:
    """A run stopped after 3 of its 10 steps (5 per epoch)."""
    out = tmp_path / "run"
    assert pretrain(out, "--max-steps", "3") == 0
    capsys.readouterr()
    return out


@pytest.mark.parametrize(
    ("flags", "field", "before", "after"),
    [
        (["--lr", "1e9"], "optim.lr", "0.004", "1000000000.0"),
        (["--mask", "random"], "masking.strategies", "['high']", "['random']"),
        (["--seed", "3"], "run.seed", "0", "3"),
        (["--arch", "vit_micro"], "model.arch", "'vit_nano'", "'vit_micro'"),
    ],
    ids=["lr", "mask", "seed", "arch"],
)
def test_a_changed_setting_is_refused_by_name(stopped_run, capsys, flags, field, before, after):
    checkpoint, config = stopped_run / "checkpoint.pth", stopped_run / "config.yaml"
    saved, text = checkpoint.read_bytes(), config.read_text()
    assert pretrain(stopped_run, *flags) == 2
    err = one_line_error(capsys)
    assert f"was run with {field}={before}, this run has {field}={after}" in err
    assert checkpoint.read_bytes() == saved and config.read_text() == text  # nothing rewritten


def test_more_epochs_and_run_settings_may_change(stopped_run, capsys):
    assert pretrain(stopped_run, "--epochs", "3", "--set", "run.log_every_steps=2") == 0
    assert load_checkpoint(stopped_run / "checkpoint.pth")["step"] == 15


def test_a_change_can_be_taken_on_purpose(stopped_run, capsys):
    assert pretrain(stopped_run, "--lr", "0.001", "--allow-changes", "--max-steps", "4") == 0
    assert "changed settings: optim.lr 0.004 -> 0.001" in capsys.readouterr().err
    assert load_checkpoint(stopped_run / "checkpoint.pth")["config"]["optim"]["lr"] == 0.001


def test_non_finite_weights_are_named_on_resume(stopped_run, capsys):
    path = stopped_run / "checkpoint.pth"
    state = load_checkpoint(path)
    state["student"]["backbone.blocks.0.attn.qkv.weight"][0, 0] = float("nan")
    save_atomic(state, path)
    assert pretrain(stopped_run) == 2
    err = one_line_error(capsys)
    assert "non-finite weights (student.backbone.blocks.0.attn.qkv.weight)" in err
    assert "learning rate" not in err


@pytest.mark.parametrize(
    "garbage", [b"42\n", b"null\n", b"\xff\xfe broken\n", b'{"kind": "step", "step": "x"}\n']
)
def test_a_damaged_last_log_line_does_not_block_the_resume(stopped_run, capsys, garbage):
    log = stopped_run / "log.jsonl"
    log.write_bytes(log.read_bytes() + garbage)
    assert pretrain(stopped_run, "--max-steps", "5") == 0
    assert [r["step"] for r in read_log(stopped_run, "step")][-1] == 5
    assert "dropped 1 line(s) that are not log records" in capsys.readouterr().err


def test_the_last_step_is_logged_before_the_first_logging_step(tmp_path):
    out = tmp_path / "run"
    assert pretrain(out, "--max-steps", "3", "--set", "run.log_every_steps=10") == 0
    assert [r["step"] for r in read_log(out, "step")] == [3]


def test_a_run_refused_during_data_set_up_leaves_no_folder(tmp_path, capsys):
    data = tmp_path / "images"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(data / c / f"{i}.png")
    (data / "a" / "00broken.png").write_bytes(b"not an image")  # among the first 4
    out = tmp_path / "never"
    argv = ["--data", str(data), "--set", "data.on_bad_image=error"]
    argv += ["--set", "data.batch_augment=false"]  # (the per-image path reads files)
    assert pretrain(out, *argv) == 2
    assert "00broken.png" in one_line_error(capsys)
    assert not out.exists()


def test_a_full_disk_while_saving_is_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save

    def full_after_the_first(obj, f, *args, **kwargs):
        if load_calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        load_calls.append(1)
        return real_save(obj, f, *args, **kwargs)

    load_calls: list[int] = []
    monkeypatch.setattr(torch, "save", full_after_the_first)
    assert pretrain(out, "--set", "run.save_every_steps=2") == 2
    err = one_line_error(capsys)
    assert "disk full" in err and "previous checkpoint is kept" in err
    assert load_checkpoint(out / "checkpoint.pth")["step"] == 2  # the first save stayed
    monkeypatch.undo()
    assert pretrain(out, "--max-steps", "3") == 0  # with room again, it resumes from step 2
    assert "resuming at step 2" in capsys.readouterr().out
