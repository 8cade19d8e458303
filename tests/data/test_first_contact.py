"""A new user's first commands: the default command on every kind of data, every shipped
config on an image folder, and the other commands on a plain image folder, each for one
training step, from the command line (``mimkit.cli.main``) as typed, plus only what keeps
them fast: an output folder, --max-steps 1 (or --epochs 1 on 40 images), a small batch where
the config's would not fit the tiny data, no fp16 autocast on the CPU."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from data_fixtures import DATA_KINDS, data_spec, image_folder, imagenet_tree

from mimkit.cli import main
from mimkit.compare import build_grid, load_compare_config
from mimkit.config import shipped_config_names
from mimkit.ibot.config import load_config
from mimkit.train.checkpoint import load_checkpoint

SLOW_IMG_SIZE = 64  # configs for larger images (ViT-S/16 at 224 px) take seconds a step


def run_cli(capsys, *argv: str) -> tuple[str, str]:
    """``mimkit ARGV`` in this process: (stdout, stderr); fails with stderr unless it
    returned 0, or if a warning or error took more than its one line."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err and "warnings.warn" not in err, err
    for line in err.splitlines():
        assert "Warning" not in line or line.startswith(f"mimkit {argv[0]}: warning: "), line
    return out, err


@pytest.mark.parametrize("kind", DATA_KINDS)
def test_the_default_command_trains_on_every_kind_of_data(tmp_path, capsys, kind):
    spec = data_spec(kind, tmp_path)
    out = tmp_path / "out"
    # 40 images and a batch of 32: --epochs 1 is one step, then the final k-NN as a user
    # sees it; the embedded set's 10,000 images stop after one step instead.
    stop = ["--max-steps", "1"] if kind == "embedded" else ["--epochs", "1"]
    text, err = run_cli(capsys, "pretrain", "--data", spec, "--output-dir", str(out), *stop)
    assert load_checkpoint(out / "checkpoint.pth")["step"] == 1
    array = kind not in ("image-folder", "plain-folder", "imagenet-tree")
    expected = "augmented whole batches" if array else "augmented image by image"
    assert expected in text and "(auto: " in text
    if kind == "plain-folder":
        assert "warning: " in err and "has no val split: no k-NN during or after training" in err
        assert "finished at step 1" in text and "k-NN top-1" not in text
    elif kind != "embedded":
        assert "k-NN top-1 (teacher CLS, k=20" in text and "against 40 train images" in text


def _shipped(name: str):
    slow = load_config(name).model.img_size > SLOW_IMG_SIZE
    return pytest.param(name, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("config", [_shipped(n) for n in shipped_config_names()])
def test_every_shipped_config_trains_a_step_on_an_image_folder(tmp_path, capsys, config):
    data = image_folder(tmp_path / "photos")
    out = tmp_path / "out"
    text, _ = run_cli(
        capsys, "pretrain", "--config", config, "--data", str(data), "--output-dir", str(out),
        "--max-steps", "1", "--batch-size", "2", "--amp", "none",  # fp16 is slow on a CPU
    )  # fmt: skip
    assert "augmented image by image with PIL (" in text
    assert load_checkpoint(out / "checkpoint.pth")["step"] == 1


@pytest.mark.parametrize("kind", DATA_KINDS)
def test_the_shipped_cpu_grid_trains_on_every_kind_of_data(tmp_path, capsys, kind):
    """`mimkit compare --config fashion_mnist_strategies --set data.dataset=DATA`: every run
    of the grid is built for the data, and its per-crop run (a different attention layer for
    each global crop) trains a step there."""
    spec = data_spec(kind, tmp_path)
    grid = build_grid(
        load_compare_config("fashion_mnist_strategies", [("data.dataset", spec)]), tmp_path / "g"
    )
    assert len(grid) == 93 and {r.config.data.dataset for r in grid} == {spec}
    (run,) = [r for r in grid if r.strategy.name.startswith("Per-crop") and r.seed == 0]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run.config.to_dict()))
    out = tmp_path / "out"
    run_cli(capsys, "pretrain", "--config", str(config), "--output-dir", str(out),
            "--max-steps", "1", "--no-knn")  # fmt: skip
    assert load_checkpoint(out / "checkpoint.pth")["step"] == 1


@pytest.fixture(scope="module")
def folder_and_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """A plain image folder (train/ and val/ of mixed-size PNG and JPEG) and a vit_nano
    checkpoint pretrained on it for one step."""
    root = tmp_path_factory.mktemp("first_contact")
    data, out = image_folder(root / "photos"), root / "pretrained"
    code = main(
        ["pretrain", "--data", str(data), "--output-dir", str(out), "--max-steps", "1",
         "--arch", "vit_nano", "--img-size", "16", "--patch-size", "4", "--batch-size", "8",
         "--set", "run.progress=false"]
    )  # fmt: skip
    assert code == 0
    return data, out / "checkpoint.pth"


def test_finetune_on_an_image_folder(tmp_path, capsys, folder_and_checkpoint):
    data, checkpoint = folder_and_checkpoint
    out = tmp_path / "ft"
    text, _ = run_cli(
        capsys, "finetune", "--init", str(checkpoint), "--data", str(data),
        "--output-dir", str(out), "--max-steps", "1", "--batch-size", "8",
    )  # fmt: skip
    assert "max_steps at step 1" in text and (out / "checkpoint.pth").is_file()


@pytest.mark.parametrize(("command", "extra"), [("knn", []), ("linear", ["--epochs", "1"])])
def test_knn_and_linear_on_an_image_folder(tmp_path, capsys, folder_and_checkpoint, command, extra):
    data, checkpoint = folder_and_checkpoint
    out = tmp_path / f"{command}.json"
    text, _ = run_cli(
        capsys, command, "--checkpoint", str(checkpoint), "--data", str(data), *extra,
        "--output", str(out), "--quiet",
    )  # fmt: skip
    assert "40 train / 10 val" in text and out.is_file()


def test_masks_on_an_image_folder(tmp_path, capsys, folder_and_checkpoint):
    data, checkpoint = folder_and_checkpoint
    out = tmp_path / "masks"
    text, _ = run_cli(
        capsys, "masks", "--checkpoint", str(checkpoint), "--data", str(data),
        "--output-dir", str(out), "--num-images", "1",
    )  # fmt: skip
    (png,) = out.glob("*.png")
    assert f"wrote {png}" in text and png.stat().st_size > 0


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_data_commands() -> list[list[str]]:
    """The README's shell commands that run mimkit on ``--data``, as the arguments after
    ``mimkit`` (continued lines joined, comments dropped; a torchrun launch becomes one
    process, and one that differs from another only in its output folder is dropped)."""
    commands: dict[str, list[str]] = {}
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            starts = [i for i, a in enumerate(argv) if a == "mimkit" or a.endswith("/mimkit")]
            if starts and "--data" in argv:
                args = argv[starts[0] + 1 :]
                if "--output-dir" in args:
                    at = args.index("--output-dir")
                    key = " ".join(args[:at] + args[at + 2 :])
                else:
                    key = " ".join(args)
                commands.setdefault(key, args)
    return list(commands.values())


def _readme_case(args: list[str]):
    heavy = "--config" in args and args[0] == "pretrain"  # a 224 px ViT-S/16 config
    return pytest.param(args, id=" ".join(args), marks=[pytest.mark.slow] if heavy else [])


def test_the_readme_runs_mimkit_on_folders():
    commands = [" ".join(c) for c in readme_data_commands()]
    own_folder = "pretrain --data photos --img-size 64 --patch-size 8 --output-dir runs/photos"
    assert own_folder in commands
    assert len(commands) >= 4


@pytest.mark.parametrize("args", [_readme_case(c) for c in readme_data_commands()])
def test_a_readme_command_on_a_folder_runs(
    tmp_path, capsys, monkeypatch, folder_and_checkpoint, args
):
    """As written in the README, in a folder that holds its data (a relative ``--data`` is
    written there; an absolute one, ImageNet's, becomes a tiny ImageNet tree), its weights
    files are a tiny checkpoint, and training stops after one step; the 224 px configs also
    take a batch of 2 without fp16 (slow on a CPU)."""
    monkeypatch.chdir(tmp_path)
    argv = list(args)
    at = argv.index("--data") + 1
    if Path(argv[at]).is_absolute():
        argv[at] = str(imagenet_tree(tmp_path / "imagenet"))
    else:
        image_folder(tmp_path / argv[at])
    for flag in ("--checkpoint", "--init"):
        if flag in argv:
            argv[argv.index(flag) + 1] = str(folder_and_checkpoint[1])
    command = argv[0]
    if command in ("pretrain", "finetune"):
        argv += ["--max-steps", "1"]
        if "--output-dir" not in argv:
            argv += ["--output-dir", "out"]
    if command == "finetune" or "--config" in argv:
        argv += ["--batch-size", "2"] + (["--amp", "none"] if command == "pretrain" else [])
    text, _ = run_cli(capsys, *argv)
    if command == "pretrain":
        assert "max_steps at step 1" in text
