"""Layer-wise LR decay and weight-decay groups of the fine-tuning optimiser."""

from __future__ import annotations

import re

import pytest

from mimkit.finetune import build_finetuning, layer_decay_groups, layer_id
from mimkit.finetune.model import Classifier
from mimkit.models import build_vit
from mimkit.train.optim import set_hyperparameters


def _classifier(depth_arch: str = "vit_nano") -> Classifier:
    return Classifier(build_vit(depth_arch, 16, 4), num_classes=10, init_scale=0.001)


def test_layer_ids_follow_beit():
    vit = build_vit("vit_nano", 16, 4)  # depth 3
    assert layer_id("backbone.cls_token", vit) == 0
    assert layer_id("backbone.pos_embed", vit) == 0
    assert layer_id("backbone.patch_embed.proj.weight", vit) == 0
    assert layer_id("backbone.blocks.0.attn.qkv.weight", vit) == 1
    assert layer_id("backbone.blocks.2.mlp.fc2.bias", vit) == 3
    assert layer_id("backbone.norm.weight", vit) == 4
    assert layer_id("head.weight", vit) == 4


def _block_layers(backbone) -> list[int]:
    """Each attention block's layer id, in the order the blocks run."""
    blocks = [(n, m) for n, m in backbone.named_modules() if re.search(r"blocks\.\d+$", n)]
    return [backbone.layer_id(f"{n}.{next(m.named_parameters())[0]}") for n, m in blocks]


def test_swin_blocks_are_numbered_across_stages():
    swin = build_vit("swin_nano", 16, 2)
    assert swin.spec.depths == (2, 2)
    assert _block_layers(swin) == [1, 2, 3, 4]
    assert swin.layer_id("patch_embed.proj.weight") == swin.layer_id("masked_embed") == 0
    # Stage 1's patch merging learns with the block before it, the final norm after all.
    assert swin.layer_id("layers.1.downsample.reduction.weight") == 2
    assert swin.layer_id("norm.weight") == 5


def test_timm_vit_embeddings_sit_below_its_blocks():
    pytest.importorskip("timm")
    vit = build_vit("timm:deit_tiny_patch16_224", 16, 4)
    assert _block_layers(vit) == list(range(1, vit.depth + 1))
    for name in ("vit.cls_token", "vit.pos_embed", "vit.patch_embed.proj.weight"):
        assert vit.layer_id(name) == 0
    assert vit.layer_id("vit.norm.weight") == vit.depth + 1


def test_every_parameter_gets_its_blocks_lr_scale():
    model = _classifier()
    groups = layer_decay_groups(model, layer_decay=0.5)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    # Each block learns 0.5x as fast as the one above it; the head at the full rate.
    assert scale["head.weight"] == scale["head.bias"] == scale["backbone.norm.weight"] == 1.0
    assert scale["backbone.blocks.2.attn.qkv.weight"] == 0.5
    assert scale["backbone.blocks.1.norm1.bias"] == 0.25
    assert scale["backbone.blocks.0.mlp.fc1.weight"] == 0.125
    for name in ("backbone.cls_token", "backbone.pos_embed", "backbone.patch_embed.proj.bias"):
        assert scale[name] == 0.0625


def test_weight_decay_is_on_weight_matrices_only():
    model = _classifier()
    groups = layer_decay_groups(model, layer_decay=0.65)
    decayed = {n for g in groups if g["apply_wd"] for n in g["param_names"]}
    plain = {n for g in groups if not g["apply_wd"] for n in g["param_names"]}
    matrices = ["attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"]
    expected = {"backbone.patch_embed.proj.weight", "head.weight"} | {
        f"backbone.blocks.{i}.{m}" for i in range(3) for m in matrices
    }
    assert decayed == expected
    everything = {n for n, _ in model.named_parameters()}
    # The mask token is not used by fine-tuning: frozen and in no group.
    assert plain == everything - expected - {"backbone.masked_embed"}
    assert {"backbone.cls_token", "backbone.pos_embed", "head.bias"} <= plain
    assert all(n.endswith(("bias", "token", "pos_embed")) or ".norm" in n for n in plain)


def test_trainer_optimizer_uses_the_configured_decays(make_config):
    loop = build_finetuning(make_config(**{"optim.layer_decay": 0.8, "optim.weight_decay": 0.1}))
    loop.close()
    schedule = loop.schedule
    set_hyperparameters(loop.optimizer, 1.0, schedule.wd(0))
    by_name = {
        n: (g["lr"], g["weight_decay"])
        for g in loop.optimizer.param_groups
        for n in g["param_names"]
    }
    assert by_name["head.weight"] == (1.0, 0.1)
    assert by_name["backbone.blocks.0.attn.qkv.weight"] == pytest.approx((0.8**3, 0.1))
    assert by_name["backbone.pos_embed"] == pytest.approx((0.8**4, 0.0))
    # The schedule: linear warm-up over the first epoch, then cosine to min_lr; the weight
    # decay stays where it is.
    peak = loop.method.cfg.optim.lr * 8 / 256
    assert schedule.learning_rate(0) == 0.0
    assert schedule.learning_rate(loop.steps_per_epoch) == pytest.approx(peak)
    last = schedule.total_steps
    assert schedule.learning_rate(last) == pytest.approx(loop.method.cfg.optim.min_lr)
    assert schedule.wd(0) == schedule.wd(last) == 0.1
