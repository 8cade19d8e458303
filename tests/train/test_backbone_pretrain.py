"""Two pretraining steps on CPU with every backbone family, capability checks at start-up,
and exports that timm loads strictly."""

from __future__ import annotations

import math

import pytest
import torch

from mimkit.cli import main
from mimkit.errors import ConfigError
from mimkit.ibot.pretrain import run_pretraining
from mimkit.ibot.validation import validate_config
from mimkit.train.logging import read_log
from mimkit.weights import export_backbone, load_pretrained

SWIN = {"model.arch": "swin_nano", "model.img_size": 16, "model.patch_size": 2}
TIMM = {"model.arch": "timm:deit_tiny_patch16_224", "model.img_size": 16, "model.patch_size": 4}


def _two_steps(make_config, name, arch, strategies):
    cfg = make_config(name, **arch, **{"masking.strategies": strategies, "run.max_steps": 2})
    result = run_pretraining(cfg)
    assert result.status == "max_steps" and result.step == 2
    rows = read_log(cfg.run.output_dir, "step")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["loss"]) and r["patch"] > 0 and r["cls"] > 0
        assert 0.05 < r["mask_ratio"] < 0.6
    return cfg


@pytest.mark.parametrize(
    "strategy",
    # Learned scores need patch tokens only, no attention read-out.
    ["random", "block", "green", "mix@pred", "sample@adv"],
)
def test_swin_trains_with_ibot_masks(make_config, strategy):
    _two_steps(make_config, strategy.replace("@", "_"), SWIN, [strategy])


@pytest.mark.parametrize("strategy", ["random", "high", "high@rollout"])
def test_timm_vit_trains_with_every_kind_of_mask(make_config, strategy):
    pytest.importorskip("timm")
    _two_steps(make_config, strategy.replace("@", "_"), TIMM, [strategy])


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"masking.strategies": ["high"]}, "needs the backbone's CLS attention, which swin_nano"),
        ({"masking.strategies": ["low@rollout"]}, "attention rollout, which swin_nano"),
        ({"masking.strategies": ["block"], "loss.lambda3": 0.5}, "score raw:3 needs"),
        ({"data.local_crop_size": 6}, "not divisible by final-stage stride 4"),
        ({"model.img_size": 18}, "not divisible"),
    ],
)
def test_swin_refuses_what_it_cannot_do_before_any_work(make_config, fields, match):
    with pytest.raises(ConfigError, match=match):
        validate_config(make_config(**{**SWIN, **fields}))


def test_cli_refusal_is_one_line(tmp_path, capsys):
    argv = ["pretrain", "--arch", "swin_nano", "--img-size", "16", "--patch-size", "2"]
    argv += ["--mask", "high", "--set", "data.local_crop_size=8"]
    argv += ["--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CLS attention" in err
    assert not (tmp_path / "out").exists()


def test_swin_checkpoint_exports_to_timm_strictly(make_config, tmp_path):
    swin_mod = pytest.importorskip("timm.models.swin_transformer")
    cfg = make_config("swin", **SWIN, **{"run.max_steps": 1})
    run_pretraining(cfg)
    out = tmp_path / "swin.safetensors"
    spec = export_backbone(f"{cfg.run.output_dir}/checkpoint.pth", out)
    assert spec.family == "swin" and spec.arch == "swin_nano"
    theirs = swin_mod.SwinTransformer(
        img_size=16, patch_size=2, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4,
        num_classes=0,
    ).eval()  # fmt: skip
    from safetensors.torch import load_file

    theirs.load_state_dict(load_file(str(out)), strict=True)
    ours, spec2, _ = load_pretrained(out)
    assert spec2 == spec
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x).pooled, theirs(x), atol=1e-5, rtol=1e-4)


def test_timm_checkpoint_exports_to_the_same_timm_model(make_config, tmp_path):
    timm = pytest.importorskip("timm")
    cfg = make_config("timm", **TIMM, **{"run.max_steps": 1})
    run_pretraining(cfg)
    out = tmp_path / "deit.safetensors"
    assert main(["export", f"{cfg.run.output_dir}/checkpoint.pth", str(out)]) == 0
    theirs = timm.create_model(
        "deit_tiny_patch16_224", num_classes=0, img_size=16, patch_size=4
    ).eval()
    from safetensors.torch import load_file

    theirs.load_state_dict(load_file(str(out)), strict=True)
    ours, _, notes = load_pretrained(out)
    assert any("masked_embed" in n for n in notes)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x).pooled, theirs(x), atol=1e-5, rtol=1e-4)
