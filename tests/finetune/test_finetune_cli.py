"""``mimkit finetune`` refuses bad input with one line before any work."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mimkit.cli import build_parser, main
from mimkit.commands.config_args import config_overrides
from mimkit.commands.finetune import FLAGS
from mimkit.config import shipped_config_names
from mimkit.errors import CheckpointError
from mimkit.finetune import load_finetune_config
from mimkit.finetune.model import read_init
from mimkit.train.checkpoint import check_same_epochs, load_checkpoint, save_atomic

TINY = ["--arch", "vit_nano", "--img-size", "16", "--patch-size", "4", "--subset", "4"]
TINY += ["--val-subset", "2", "--batch-size", "8", "--workers", "0", "--device", "cpu"]
TINY += ["--set", "run.progress=false", "--set", "run.tensorboard=false"]


def parse(argv: list[str]):
    return build_parser().parse_args(["finetune", *argv])


def _refused(capsys, argv: list[str]) -> str:
    assert main(["finetune", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mimkit finetune: error:") and "\n" not in err
    return err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--init"),
        (["--init", "/no/such/weights.pth"], "no such file"),
        (["--init", "random", "--arch", "vit_huge"], "unknown arch"),
        (["--init", "random", "--mixup", "0.8", "--batch-size", "7"], "even"),
        (["--init", "random", "--layer-decay", "1.5"], "layer_decay"),
        (["--init", "random", "--data", "/no/such/folder"], "does not exist"),
        (["--init", "random", "--set", "augment.randaug_magnitude=12"], "randaug_magnitude"),
        (["--init", "random", "--set", "augment.crop_scale=[0.9,0.1]"], "crop_scale"),
        (["--init", "random", "--set", "optim.nope=1"], "optim.nope"),
        (["--init", "random", "--warmup-epochs", "5", "--epochs", "2"], "warmup_epochs"),
        (["--init", "random", "--img-size", "15"], "divisible"),
        (["--init", "random", "--subset", "1", "--batch-size", "64"], "batch"),
        (["--init", "random", "--amp", "fp8"], "run.amp"),
        (["--init", "random", "--device", "cuda:7"], "cuda"),
        (["--init", "random", "--config", "no_such_config"], "no_such_config"),
    ],
)
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    argv = [*TINY, "--output-dir", str(out), *extra]
    assert message in _refused(capsys, argv)
    assert not out.exists()


def test_random_init_needs_a_shape(tmp_path, capsys):
    err = _refused(capsys, ["--init", "random", "--output-dir", str(tmp_path / "out")])
    assert "--arch" in err


def test_a_file_that_is_not_a_vit_is_refused(tmp_path, capsys):
    weights = tmp_path / "not_a_vit.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, weights)
    err = _refused(capsys, ["--init", str(weights), "--output-dir", str(tmp_path / "out")])
    assert "not a ViT" in err


def test_bad_subset_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--init", "random", "--subset", "lots"])
    assert exit_info.value.code == 2
    assert "--subset 'lots'" in capsys.readouterr().err


def test_a_pretraining_output_dir_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "pre"
    save_atomic({"student": {}, "teacher": {}, "step": 7}, out / "checkpoint.pth")
    before = (out / "checkpoint.pth").read_bytes()
    err = _refused(capsys, ["--init", "random", *TINY, "--output-dir", str(out)])
    assert "not a fine-tuning checkpoint" in err
    assert (out / "checkpoint.pth").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pth"]


def test_resuming_with_other_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "ft"
    argv = ["--init", "random", *TINY, "--epochs", "1", "--output-dir", str(out)]
    assert main(["finetune", *argv]) == 0
    before = (out / "checkpoint.pth").read_bytes()
    capsys.readouterr()
    err = _refused(capsys, [*argv, "--lr", "0.01"])
    assert "optim.lr" in err
    assert (out / "checkpoint.pth").read_bytes() == before
    assert "--no-resume" in _refused(capsys, [*argv, "--no-resume"])
    # Another number of processes would move the epochs: refused as well.
    path = out / "checkpoint.pth"
    state = load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"x 1 process\(es\)\); this run has .* x 2\)"):
        check_same_epochs(path, state, state["batch_size"], 2, state["steps_per_epoch"])
    # Settings that do not change the computation may differ.
    assert main(["finetune", *argv, "--workers", "1", "--set", "run.log_every_steps=3"]) == 0


def test_mixup_without_timm_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a)
    )
    mixing = ["--mixup", "0.8", "--cutmix", "1.0"]
    err = _refused(
        capsys, ["--init", "random", *TINY, *mixing, "--output-dir", str(tmp_path / "o")]
    )
    assert "mimkit[timm]" in err and "--mixup 0 --cutmix 0" in err
    # Without Mixup/CutMix, timm is not needed.
    args = ["--init", "random", *TINY, "--mixup", "0", "--cutmix", "0", "--max-steps", "1"]
    assert main(["finetune", *args, "--output-dir", str(tmp_path / "o")]) == 0


def test_shipped_configs_load_and_check():
    names = shipped_config_names("finetune")
    assert {"fashion_mnist", "imagenet_vit_small_ibot", "photo_folder"} <= set(names)
    for name in names:
        cfg = load_finetune_config(name, [("run.init", "random"), ("model.arch", "vit_nano")])
        cfg.check()
    ibot = load_finetune_config("imagenet_vit_small_ibot")
    assert ibot.optim.layer_decay == 0.75 and ibot.optim.epochs == 200


def test_a_checkpoint_with_the_older_model_description_still_resumes(tmp_path, capsys):
    out = tmp_path / "ft"
    argv = ["--init", "random", *TINY, "--epochs", "1", "--output-dir", str(out)]
    assert main(["finetune", *argv]) == 0
    cfg = load_finetune_config("fashion_mnist", config_overrides(parse(argv), FLAGS))
    init = read_init(cfg)
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    # The ViT-only description checkpoints carried before Swin and timm backbones.
    old = {k: init.description[k] for k in ("embed_dim", "depth", "patch_size", "img_size")}
    old.update({k: init.description[k] for k in ("in_chans", "num_heads", "qkv_bias")})
    old.update(mlp_ratio=init.description["mlp_ratio"], arch=init.description["arch"])
    state["config"]["model"] = old
    save_atomic(state, out / "checkpoint.pth")
    capsys.readouterr()
    assert main(["finetune", *argv]) == 0  # resumed: the run was finished already
    assert "finished at step" in capsys.readouterr().out
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    state["config"]["model"] = {**old, "embed_dim": old["embed_dim"] * 2}
    save_atomic(state, out / "checkpoint.pth")
    err = _refused(capsys, argv)
    assert "fine-tuned another backbone (embed_dim" in err


def test_a_checkpoint_from_before_newer_settings_resumes_as_it_ran(tmp_path, capsys):
    out = tmp_path / "ft"
    argv = ["--init", "random", *TINY, "--epochs", "1", "--output-dir", str(out)]
    argv += ["--set", "data.batch_augment=false"]
    assert main(["finetune", *argv]) == 0
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    del state["config"]["finetune"]["optim"]["ema"]  # written before these settings existed
    del state["config"]["finetune"]["data"]["batch_augment"]
    save_atomic(state, out / "checkpoint.pth")
    assert main(["finetune", *argv]) == 0  # resumes as it ran (finished already)
    # Today's default (auto: whole batches) would make other views: refused.
    err = _refused(capsys, argv[:-2])
    assert "data.batch_augment=False, this run has data.batch_augment='auto'" in err
