"""End-to-end pretraining on real (embedded) images with a tiny ViT."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from mimkit.ibot.pretrain import build_pretraining, run_pretraining
from mimkit.train.checkpoint import KeptCheckpoints, load_checkpoint
from mimkit.train.logging import read_log

STRATEGY_FAMILIES = [
    ["random"],
    ["block"],
    ["high@raw:1"],
    ["low@raw:-1"],
    ["hint@raw:2"],
    ["high@log:-1"],
    ["high@power:-1:0.5"],
    ["high@rollout:0-2"],
    ["high@multi:0+2"],
    ["high@raw:2", "low@rollout"],  # one strategy per global crop
]


@pytest.mark.parametrize("strategies", STRATEGY_FAMILIES, ids=lambda s: " ".join(s))
def test_every_strategy_family_trains(make_config, strategies):
    cfg = make_config(**{"masking.strategies": strategies, "run.max_steps": 2})
    result = run_pretraining(cfg)
    assert result.status == "max_steps" and result.step == 2
    steps = read_log(cfg.run.output_dir, "step")
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert math.isfinite(r["loss"]) and r["patch"] > 0 and r["cls"] > 0
        assert 0.05 < r["mask_ratio"] < 0.6  # ratio range 0.1-0.5 of every image
    state = load_checkpoint(f"{cfg.run.output_dir}/checkpoint.pth")
    assert state["step"] == 2
    # The teacher moved by EMA, but stays distinct from the student.
    t, s = state["teacher"], state["student"]
    assert not torch.equal(t["backbone.pos_embed"], s["backbone.pos_embed"])


def test_teacher_is_ema_of_student(make_config):
    cfg = make_config(**{"run.max_steps": 1, "optim.momentum_teacher": 0.5})
    loop = build_pretraining(cfg)
    before_t = {k: v.clone() for k, v in loop.method.teacher.state_dict().items()}
    loop.fit()
    s, t = loop.method.student.state_dict(), loop.method.teacher.state_dict()
    m = loop.schedule.momentum(0)
    key = "backbone.blocks.0.attn.qkv.weight"
    torch.testing.assert_close(t[key], m * before_t[key] + (1 - m) * s[key])


@pytest.mark.parametrize("batched", [False, True], ids=["per-image", "batch-augment"])
def test_resume_replays_the_same_loss_curve(make_config, batched):
    aug = {"data.batch_augment": batched}
    full = make_config("full", **aug)
    run_pretraining(full)
    part = make_config("part", **aug, **{"run.max_steps": 3})  # stop mid-epoch
    assert run_pretraining(part).step == 3
    # Whole-batch views are seeded by the step: loader workers make the same ones.
    resumed = make_config("part", **aug, **{"data.num_workers": 2 if batched else 0})
    result = run_pretraining(resumed)
    assert result.status == "finished" and result.step == 10
    a = [r["loss"] for r in read_log(full.run.output_dir, "step")]
    b = [r["loss"] for r in read_log(resumed.run.output_dir, "step")]
    assert len(a) == len(b) == 10
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    # One record per finished epoch; the resumed one averages over all its 5 steps too.
    epochs = [(r["epoch"], r["steps"]) for r in read_log(resumed.run.output_dir, "epoch")]
    assert epochs == [(1, 5), (2, 5)]
    ea = [r["loss"] for r in read_log(full.run.output_dir, "epoch")]
    eb = [r["loss"] for r in read_log(resumed.run.output_dir, "epoch")]
    assert ea == pytest.approx(eb, rel=1e-5, abs=1e-6)
    ta = load_checkpoint(f"{full.run.output_dir}/checkpoint.pth")["teacher"]
    tb = load_checkpoint(f"{resumed.run.output_dir}/checkpoint.pth")["teacher"]
    for key in ta:
        torch.testing.assert_close(ta[key], tb[key], rtol=1e-4, atol=1e-5)


def test_a_ruinous_step_never_replaces_the_last_good_checkpoint(make_config):
    """The issue's case: one huge step ruins the weights with a finite loss (and is saved);
    the next step is not finite. The checkpoint in place must be the last good one."""
    first = make_config(**{"run.max_steps": 5})  # one epoch, saved at step 5
    assert run_pretraining(first).step == 5
    path = Path(first.run.output_dir) / "checkpoint.pth"
    good = path.read_bytes()
    wild_lr = {"optim.lr": 1e10, "run.save_every_steps": 1, "run.allow_changes": True}
    wild = run_pretraining(make_config(**wild_lr))
    assert (wild.status, wild.step) == ("non_finite", 5)
    assert re.search(r"at step 6; .*checkpoint.pth from step 5 \(epoch 1\) is kept", wild.error)
    assert path.read_bytes() == good  # the step-6 save was rolled back
    assert sorted(p.name for p in path.parent.glob("*checkpoint*")) == ["checkpoint.pth"]
    # ... and resuming from it with a sane learning rate trains on to the end.
    result = run_pretraining(make_config())
    assert result.status == "finished" and result.step == 10
    state = load_checkpoint(path)
    assert all(torch.isfinite(v).all() for v in state["student"].values() if v.is_floating_point())
    steps = [r["step"] for r in read_log(first.run.output_dir, "step")]
    assert steps == list(range(1, 11))  # one consistent story: no step of the wild run left


def test_a_non_finite_run_before_any_save_writes_no_checkpoint(make_config):
    cfg = make_config(**{"optim.lr": 1e10})
    result = run_pretraining(cfg)
    assert result.status == "non_finite" and result.step is None
    assert "no checkpoint was saved before it" in result.error
    assert not (Path(cfg.run.output_dir) / "checkpoint.pth").exists()


def test_kept_checkpoints_roll_back_to_the_last_confirmed_one(tmp_path):
    kept = KeptCheckpoints(tmp_path)
    kept.save({"step": 1})
    kept.confirm()
    kept.save({"step": 2})  # unconfirmed: step 1 stays beside it
    assert load_checkpoint(tmp_path / "checkpoint.previous.pth")["step"] == 1
    kept.save({"step": 3})  # still unconfirmed: the confirmed step 1 is what stays
    assert kept.roll_back() == 1
    assert load_checkpoint(tmp_path / "checkpoint.pth")["step"] == 1
    kept.save({"step": 4})
    kept.confirm()
    assert not (tmp_path / "checkpoint.previous.pth").exists()
    assert KeptCheckpoints(tmp_path).roll_back() == 4  # nothing older to go back to


def test_existing_checkpoint_is_not_overwritten_without_resume(make_config):
    from mimkit.errors import ConfigError

    cfg = make_config(**{"run.max_steps": 1})
    run_pretraining(cfg)
    with pytest.raises(ConfigError, match="exists"):
        build_pretraining(cfg, resume=False)


def test_init_from_exported_weights_and_refuse_a_mismatch(make_config, tmp_path):
    from mimkit.errors import CheckpointError
    from mimkit.weights import export_backbone

    first = make_config("first", **{"run.max_steps": 2})
    run_pretraining(first)
    export = tmp_path / "teacher.safetensors"
    export_backbone(f"{first.run.output_dir}/checkpoint.pth", export)
    teacher = load_checkpoint(f"{first.run.output_dir}/checkpoint.pth")["teacher"]

    second = build_pretraining(make_config("second", **{"run.init": str(export)})).method
    for key, value in second.student.backbone.state_dict().items():
        if key != "masked_embed":  # not exported: it is iBOT-only, filled with zeros
            torch.testing.assert_close(value, teacher[f"backbone.{key}"])
    torch.testing.assert_close(
        second.teacher.backbone.pos_embed, second.student.backbone.pos_embed
    )
    with pytest.raises(CheckpointError, match="blocks.3|shape|missing|unexpected"):
        build_pretraining(
            make_config("third", **{"run.init": str(export), "model.arch": "vit_micro"})
        )


def test_checkpoints_keep_the_layout_of_earlier_versions(make_config):
    """Checkpoints written before the loop / meta-architecture split had exactly these
    entries and network key names; files from then must keep resuming."""
    cfg = make_config(**{"run.max_steps": 2})
    run_pretraining(cfg)
    state = load_checkpoint(f"{cfg.run.output_dir}/checkpoint.pth")
    assert set(state) == {
        "student",
        "teacher",
        "optimizer",
        "loss",
        "scaler",
        "step",
        "epoch",
        "config",
        "mimkit_version",
        "steps_per_epoch",  # added later, with world_size: files without them still resume
        "world_size",
        "batch_size",  # added with the engine, with elapsed and epoch_stats
        "elapsed",
        "epoch_stats",
    }
    assert set(state["loss"]) == {"center", "center2"}
    for net in ("student", "teacher"):
        keys = set(state[net])
        assert {k.split(".")[0] for k in keys} == {"backbone", "head"}
        assert {
            "backbone.cls_token",
            "backbone.pos_embed",
            "backbone.masked_embed",
            "backbone.patch_embed.proj.weight",
            "backbone.blocks.0.attn.qkv.weight",
            "backbone.norm.weight",
            "head.mlp.0.weight",
            "head.last_layer.parametrizations.weight.original0",
            "head.last_layer.parametrizations.weight.original1",
        } <= keys
    assert build_pretraining(make_config(**{"run.max_steps": 3})).start_step == 2


def test_a_half_written_log_line_does_not_stop_a_resume(make_config):
    cfg = make_config(**{"run.max_steps": 3})
    run_pretraining(cfg)
    log = Path(cfg.run.output_dir) / "log.jsonl"
    with log.open("a") as f:
        f.write('{"kind": "step", "step": 4, "lo')  # a kill in the middle of a write
    assert [r["step"] for r in read_log(cfg.run.output_dir, "step")] == [1, 2, 3]
    assert run_pretraining(make_config(**{"run.max_steps": 5})).step == 5
    assert [r["step"] for r in read_log(cfg.run.output_dir, "step")] == [1, 2, 3, 4, 5]


def test_resuming_with_another_batch_size_is_refused(make_config):
    from mimkit.errors import CheckpointError

    run_pretraining(make_config(**{"run.max_steps": 3}))
    with pytest.raises(CheckpointError, match=r"optim.batch_size=8, this run has .*=16; "):
        build_pretraining(make_config(**{"optim.batch_size": 16}))
    # Even taken on purpose, it would move the epochs: still refused.
    other = make_config(**{"optim.batch_size": 16, "run.allow_changes": True})
    with pytest.raises(CheckpointError, match=r"5 steps per epoch \(batch size 8 x 1 .*has 2 "):
        build_pretraining(other)


def test_an_image_that_breaks_mid_run_stops_cleanly_with_the_state_saved(tmp_path, make_config):
    from PIL import Image

    from mimkit.errors import DataError

    data = tmp_path / "data"
    for c in ("a", "b"):
        for i in range(8):
            (data / c).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (i * 30, 0, 0)).save(data / c / f"{i}.png")
    fields = {"data.dataset": str(data), "data.subset": None, "data.on_bad_image": "error"}
    fields["data.num_workers"] = 1  # the error comes through a loader worker
    first = make_config(**fields, **{"run.max_steps": 3})
    assert run_pretraining(first).step == 3
    loop = build_pretraining(make_config(**fields))  # every header checked and good
    for f in data.rglob("*.png"):  # ... then the files go bad under the running job
        f.write_bytes(b"gone")
    with pytest.raises(DataError) as info:
        loop.fit()
    loop.close()
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert re.match(rf"image {data}/./\d\.png cannot be read .*after step 3 is saved", msg), msg
    assert load_checkpoint(Path(first.run.output_dir) / "checkpoint.pth")["step"] == 3
