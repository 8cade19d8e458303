"""Every warning a command shows is one plain ``mimkit COMMAND: warning: ...`` line: mimkit's
own, PIL's and PyTorch's, with no source line; loader workers are capped at the cores."""

from __future__ import annotations

import re

from PIL import Image

import mimkit.devices
from mimkit.cli import main

BOMB = r"mimkit pretrain: warning: Image size \(\d+ pixels\) exceeds limit of 100 pixels, .*\.$"
FAST = ["--set", "run.progress=false", "--max-steps", "1"]


def _warnings(err: str) -> list[str]:
    lines = err.strip().splitlines()
    assert all(line.startswith("mimkit pretrain: ") for line in lines), err
    return [line for line in lines if line.startswith("mimkit pretrain: warning: ")]


def test_the_small_grid_hint_warning_is_one_line(tmp_path, capsys):
    assert main(["pretrain", "--mask", "hint", "--output-dir", str(tmp_path), *FAST]) == 0
    (line,) = _warnings(capsys.readouterr().err)
    assert line.startswith("mimkit pretrain: warning: mask strategy 'hint' reveals nothing")


def test_a_decompression_bomb_warning_is_one_line(tmp_path, capsys, monkeypatch):
    # PIL warns above Image.MAX_IMAGE_PIXELS (89 Mpx) and refuses twice that: lowered here so
    # that 12x12 images (144 px) are "bombs" that still open.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    # a train/val tree: a folder without a val split would add its own warning
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(2):
                img = Image.new("RGB", (12, 12), (i * 90, 0, 0))
                img.save(tmp_path / "data" / split / c / f"{i}.png")
    argv = ["pretrain", "--data", str(tmp_path / "data"), "--batch-size", "2"]
    assert main([*argv, "--output-dir", str(tmp_path / "out"), *FAST]) == 0
    lines = _warnings(capsys.readouterr().err)
    assert lines and all(re.match(BOMB, s) for s in lines)


def test_more_loader_workers_than_cores_are_capped_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mimkit.devices, "usable_cores", lambda: 1)
    argv = ["pretrain", "--workers", "3", "--set", "data.batch_augment=false"]
    assert main([*argv, "--output-dir", str(tmp_path), *FAST]) == 0
    (line,) = _warnings(capsys.readouterr().err)
    assert line == (
        "mimkit pretrain: warning: data.num_workers 3 is more than the 1 CPU core(s) here: "
        "using 1 loader worker(s)"
    )
