"""End-to-end fine-tuning on real (small) images with a tiny ViT."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from finetune_fixtures import stripes_folder

from mimkit.cli import main
from mimkit.data import build_dataset, default_normalization, eval_transform
from mimkit.errors import NonFiniteLossError
from mimkit.evaluate.online import online_knn
from mimkit.finetune import build_finetuning, finetune, run_finetuning
from mimkit.models import build_vit
from mimkit.runs.lock import FolderInUseError
from mimkit.train.checkpoint import load_checkpoint
from mimkit.train.logging import read_log


def test_learns_a_separable_toy_problem_from_a_weights_file(make_config, tmp_path):
    data = stripes_folder(tmp_path / "stripes", per_class=32, val_per_class=16)
    weights = tmp_path / "backbone.pth"
    torch.manual_seed(1)
    torch.save(build_vit("vit_nano", 16, 4).state_dict(), weights)
    cfg = make_config(
        **{
            "run.init": str(weights),
            "model.arch": None,
            "model.img_size": None,
            "model.patch_size": None,
            "data.dataset": str(data),
            "data.subset": None,
            "data.val_subset": None,
            "optim.batch_size": 16,
            "optim.epochs": 15,
            "optim.lr": 0.05,
        }
    )
    result = finetune(cfg)
    assert result.status == "finished"
    summary = json.loads((tmp_path / "run" / "finetune.json").read_text())
    assert summary["num_classes"] == 2 and summary["num_train"] == 64
    assert summary["model"]["arch"] == "vit_nano" and summary["init"] == str(weights)
    assert len(summary["history"]) == 15
    first, last = summary["history"][0], summary["last"]
    assert last["epoch"] == 15 and last["val_top1"] >= 80  # chance: 50
    assert last["train_loss"] < first["train_loss"] - 0.05
    best = summary["best_optimistic"]
    assert best["val_top1"] == max(r["val_top1"] for r in summary["history"])


@pytest.mark.parametrize(
    "fields",
    [{}, {"data.batch_augment": False}, {"optim.ema": 0.8}],
    ids=["whole-batch-views", "per-image-views", "weight-average"],
)
def test_interrupted_run_resumes_to_the_same_curve(make_config, monkeypatch, fields):
    full = make_config("full", **fields)
    assert finetune(full).step == 10

    part = make_config("part", **fields)
    loop = build_finetuning(part)
    real_step = loop.train_step

    def step_then_ctrl_c(batch, step):
        result = real_step(batch, step)
        if step == 2:  # a real SIGINT, mid-epoch: finish this step, save, stop
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(loop, "train_step", step_then_ctrl_c)
    stopped = run_finetuning(loop)
    loop.close()
    assert stopped.status == "stopped" and stopped.step == 3
    assert load_checkpoint(f"{part.run.output_dir}/checkpoint.pth")["step"] == 3

    resumed = finetune(make_config("part", **fields))
    assert resumed.status == "finished" and resumed.step == 10
    a = read_log(full.run.output_dir, "step")
    b = read_log(part.run.output_dir, "step")
    assert [r["step"] for r in b] == list(range(1, 11))
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-5, abs=1e-6)
    ea, eb = read_log(full.run.output_dir, "epoch"), read_log(part.run.output_dir, "epoch")
    for key in ("loss", "val_top1", "val_loss"):
        assert [r[key] for r in ea] == pytest.approx([r[key] for r in eb], rel=1e-5, abs=1e-6)
    ca = load_checkpoint(f"{full.run.output_dir}/checkpoint.pth")
    cb = load_checkpoint(f"{part.run.output_dir}/checkpoint.pth")
    for net in ("model", "ema") if fields.get("optim.ema") else ("model",):
        for key in ca[net]:
            torch.testing.assert_close(ca[net][key], cb[net][key], rtol=1e-4, atol=1e-5)


def test_weight_average_is_what_is_evaluated(make_config):
    cfg = make_config(**{"optim.ema": 0.9, "optim.epochs": 1, "data.val_subset": 10})
    finetune(cfg)
    state = load_checkpoint(f"{cfg.run.output_dir}/checkpoint.pth")
    probe = build_finetuning(make_config("probe", **{"data.val_subset": 10}))
    trainer = probe.method
    averaged = {k.removeprefix("module."): v for k, v in state["ema"].items() if k != "n_averaged"}
    assert int(state["ema"]["n_averaged"]) == 5  # one update per step
    live = state["model"]["head.weight"]
    assert not torch.allclose(averaged["head.weight"], live)
    trainer.model.load_state_dict(averaged)
    trainer.ema = None  # evaluate the model itself, holding the averaged weights
    expected = trainer.evaluate()
    probe.close()
    record = read_log(cfg.run.output_dir, "epoch")[-1]
    assert record["val_top1"] == pytest.approx(expected["top1"])
    assert record["val_loss"] == pytest.approx(expected["loss"], rel=1e-5)


def test_rerunning_a_finished_run_changes_nothing(make_config):
    cfg = make_config(**{"optim.epochs": 1})
    finetune(cfg)
    before = load_checkpoint(f"{cfg.run.output_dir}/checkpoint.pth")
    again = finetune(make_config(**{"optim.epochs": 1}))
    assert again.status == "finished" and again.step == before["step"]
    assert len(read_log(cfg.run.output_dir, "epoch")) == 1


def test_checkpoint_is_read_by_knn_with_its_model_key(make_config, tmp_path, capsys):
    cfg = make_config(**{"optim.epochs": 1})
    finetune(cfg)
    ckpt = f"{cfg.run.output_dir}/checkpoint.pth"
    rc = main(
        ["knn", "--checkpoint", ckpt, "--checkpoint-key", "model", "--ks", "5"]
        + ["--subset", "4", "--val-subset", "2", "--device", "cpu", "--quiet", "--no-cache"]
    )
    assert rc == 0
    knn = json.loads((tmp_path / "run" / "knn.json").read_text())
    assert knn["model"]["arch"] == "vit_nano" and knn["num_train"] == 40


def test_command_line_run_prints_last_best_and_the_frozen_knn(tmp_path, capsys):
    weights = tmp_path / "backbone.pth"
    torch.manual_seed(3)
    start = build_vit("vit_nano", 16, 4)
    torch.save(start.state_dict(), weights)
    out = tmp_path / "cli"
    argv = ["finetune", "--init", str(weights), "--subset", "4", "--val-subset", "2"]
    argv += ["--epochs", "2", "--batch-size", "8", "--workers", "0", "--device", "cpu"]
    argv += ["--set", "run.progress=false", "--set", "run.tensorboard=false"]
    assert main([*argv, "--output-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "last  (epoch 2)" in text and "optimistic: chosen on val" in text
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == 2
    assert set(summary["last"]) >= {"epoch", "val_top1", "val_top5", "train_loss"}
    assert all(r["images_per_s"] > 0 for r in summary["history"])
    # The starting weights' k-NN on the same splits: the bank is the 40-image train subset.
    tf = eval_transform(16, *default_normalization("embedded"))
    bank = build_dataset("embedded", "train", tf, subset=4)
    queries = build_dataset("embedded", "val", tf, subset=2)
    expected = online_knn(start, bank, queries, "cpu", k=20)
    assert summary["frozen_knn"] == pytest.approx(expected)
    gain = summary["last"]["val_top1"] - expected["top1"]
    assert f"k-NN@20 on the same splits:   top-1 {expected['top1']:.2f}" in text
    assert f"fine-tuning gained {gain:+.2f} points" in text

    assert main([*argv, "--output-dir", str(tmp_path / "no_knn"), "--no-knn"]) == 0
    assert "frozen backbone" not in capsys.readouterr().out
    assert "frozen_knn" not in json.loads((tmp_path / "no_knn" / "finetune.json").read_text())


def test_a_non_finite_step_stops_and_keeps_the_last_checkpoint(make_config, monkeypatch):
    cfg = make_config()
    loop = build_finetuning(cfg)
    model = loop.method.model
    real_forward = model.forward
    training_steps = []

    def nan_from_the_seventh_step(images):
        logits = real_forward(images)
        if model.training:
            training_steps.append(1)
            if len(training_steps) >= 7:
                return logits * float("nan")
        return logits

    monkeypatch.setattr(model, "forward", nan_from_the_seventh_step)
    with pytest.raises(
        NonFiniteLossError, match=r"at step 6; .*checkpoint.pth from step 5 .*is kept"
    ):
        loop.fit()
    loop.close()
    state = load_checkpoint(f"{cfg.run.output_dir}/checkpoint.pth")
    assert state["step"] == 5  # the end of epoch 1; the bad step was not applied
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    # Rerunning resumes from it (here with the forward back to normal) and finishes.
    assert finetune(make_config()).step == 10


def test_one_run_per_output_folder(make_config):
    first = build_finetuning(make_config())
    try:
        with pytest.raises(FolderInUseError, match=str(os.getpid())):
            build_finetuning(make_config())
    finally:
        first.close()
    assert finetune(make_config(**{"optim.epochs": 1})).status == "finished"


@pytest.mark.parametrize(
    ("arch", "patch"), [("swin_nano", 2), ("timm:deit_tiny_patch16_224", 4)], ids=["swin", "timm"]
)
def test_other_backbone_families_fine_tune(make_config, arch, patch):
    if arch.startswith("timm:"):
        pytest.importorskip("timm")
    cfg = make_config(**{"model.arch": arch, "model.patch_size": patch, "optim.epochs": 1})
    result = finetune(cfg)
    assert result.status == "finished"
    summary = json.loads((Path(cfg.run.output_dir) / "finetune.json").read_text())
    assert summary["model"]["arch"] == arch
    assert math.isfinite(summary["last"]["train_loss"])
    # Layer-wise decay sees every block of the backbone as its own layer.
    groups = torch.load(Path(cfg.run.output_dir) / "checkpoint.pth", weights_only=True)
    layers = {g["layer"] for g in groups["optimizer"]["param_groups"]}
    assert layers == set(range(0, summary["model"]["depth"] + 2))


def test_a_ruinous_step_rolls_back_to_the_last_good_checkpoint(make_config):
    """As in pretraining (the same engine): a step that ruins the weights with a finite loss
    is saved; the next one is not finite; the checkpoint in place is the one before."""
    first = make_config(**{"optim.epochs": 2, "run.max_steps": 5})
    assert finetune(first).step == 5
    path = Path(first.run.output_dir) / "checkpoint.pth"
    good = path.read_bytes()
    wild = {"optim.lr": 1e12, "run.save_every_steps": 1, "run.allow_changes": True}
    with pytest.raises(NonFiniteLossError, match=r"checkpoint.pth from step 5 \(epoch 1\) is kept"):
        finetune(make_config(**{"optim.epochs": 2, **wild}))
    assert path.read_bytes() == good  # the ruined step-6 save was rolled back
    assert sorted(p.name for p in path.parent.glob("*checkpoint*")) == ["checkpoint.pth"]
    assert finetune(make_config(**{"optim.epochs": 2})).step == 10  # and it resumes from it


def test_an_unreadable_val_image_is_refused_before_any_training(tmp_path, capsys):
    data = stripes_folder(tmp_path / "stripes", per_class=8, val_per_class=4)
    (data / "val" / "vertical" / "000.png").write_bytes(b"not an image")
    out = tmp_path / "ft"
    argv = ["--init", "random", "--arch", "vit_nano", "--img-size", "16", "--patch-size", "4"]
    argv += ["--data", str(data), "--batch-size", "8", "--workers", "0", "--device", "cpu"]
    argv += ["--output-dir", str(out), "--set", "data.on_bad_image=error"]
    assert main(["finetune", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mimkit finetune: error:") and "\n" not in err
    assert "val/vertical/000.png" in err
    assert not out.exists()  # no epoch was trained, nothing was written


def test_photo_folder_recipe_runs_on_a_folder_of_images(tmp_path):
    data = stripes_folder(tmp_path / "stripes", per_class=16, val_per_class=4)
    out = tmp_path / "photos"
    argv = ["finetune", "--config", "photo_folder", "--data", str(data), "--init", "random"]
    argv += ["--arch", "vit_nano", "--img-size", "16", "--patch-size", "4", "--epochs", "1"]
    argv += ["--warmup-epochs", "0.5"]
    argv += ["--workers", "0", "--device", "cpu", "--output-dir", str(out), "--no-knn"]
    argv += ["--set", "run.progress=false", "--set", "run.tensorboard=false"]
    assert main(argv) == 0
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["num_train"] == 32 and summary["history"][0]["step"] == 1  # batch 32
