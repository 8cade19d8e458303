import numpy as np
import pytest
import torch
from PIL import Image

from mimkit.cli import main
from mimkit.commands.masks import DEFAULT_STRATEGIES
from mimkit.models import build_vit
from mimkit.viz import figure_pixels

NANO = ["--arch", "vit_nano", "--img-size", "16", "--patch-size", "4"]
# vit_nano has 3 blocks: the image, 3 attention maps, the rollout and 9 masks.
PANELS = 1 + 3 + 1 + len(DEFAULT_STRATEGIES)


def pngs(folder):
    return sorted(folder.glob("*.png"))


def test_random_weights_on_embedded_samples(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["masks", *NANO, "--num-images", "2", "--output-dir", str(out)]) == 0
    files = pngs(out)
    assert [f.name for f in files] == ["embedded_val_00000.png", "embedded_val_00001.png"]
    printed = capsys.readouterr().out
    assert all(str(f) in printed for f in files)
    for f in files:
        assert Image.open(f).size == figure_pixels(PANELS, 5, 200)


def test_folder_of_images(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    argv = ["masks", *NANO, "--images", str(folder), "--output-dir", str(out)]
    argv += ["--strategies", "high", "random", "--layers", "-1", "--panel-size", "96"]
    assert main(argv) == 0
    assert [f.name for f in pngs(out)] == ["a.png", "b.png"]
    for f in pngs(out):
        assert Image.open(f).size == figure_pixels(1 + 1 + 1 + 2, 5, 96)


def test_checkpoint_default_output_next_to_it(tmp_path, capsys):
    torch.manual_seed(0)
    m = build_vit("vit_nano", 16, 4)
    sd = {f"backbone.{k}": v for k, v in m.state_dict().items()}
    ckpt = tmp_path / "run" / "checkpoint.pth"
    ckpt.parent.mkdir()
    config = {"model": {"arch": "vit_nano", "img_size": 16, "patch_size": 4}}
    torch.save({"student": sd, "teacher": sd, "config": config}, ckpt)
    argv = ["masks", "--checkpoint", str(ckpt), "--num-images", "1", "--strategies", "hint"]
    assert main(argv) == 0
    assert [f.name for f in pngs(ckpt.parent / "masks")] == ["embedded_val_00000.png"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--strategies", "high", "sideways"], "unknown mask mode"),
        (["--strategies", "high@raw:3"], "out of range"),
        (["--layers", "0", "3"], "out of range"),
        (["--layers", "-4"], "out of range"),
        (["--images", "MISSING.png"], "no such file"),
        (["--checkpoint", "MISSING.pth"], "no such file"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    extra = [str(tmp_path / e) if e.startswith("MISSING") else e for e in extra]
    assert main(["masks", *NANO, "--output-dir", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_unreadable_image_writes_nothing(tmp_path, capsys):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("RGB", (16, 16)).save(good)
    bad.write_bytes(b"not a png")
    out = tmp_path / "out"
    argv = ["masks", *NANO, "--images", str(good), str(bad), "--output-dir", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.png" in err
    assert not out.exists()


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("a file")
    out = tmp_path / "file" / "masks"
    assert main(["masks", *NANO, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{tmp_path / 'file'} is a file" in err, err


def test_a_full_disk_is_one_line_and_leaves_no_picture(tmp_path, capsys, full_disk):
    full_disk("*.png")
    out = tmp_path / "out"
    assert main(["masks", *NANO, "--num-images", "1", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mimkit masks: error: cannot write {out / 'embedded_val_00000.png'}: disk full"
    assert list(out.iterdir()) == []
