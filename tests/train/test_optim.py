"""Weight-decay groups and gradient clipping, from the stated rules."""

from __future__ import annotations

import pytest
import torch

from mimkit.ibot.config import load_config
from mimkit.ibot.meta_arch import build_network
from mimkit.ibot.pretrain import build_pretraining
from mimkit.train import loop as loop_module
from mimkit.train.optim import adamw, clip_gradients, param_groups, set_hyperparameters


def _network(norm_last_layer: bool = False) -> torch.nn.Module:
    cfg = load_config(
        None,
        [
            ("model.arch", "vit_nano"),
            ("model.img_size", 16),
            ("model.out_dim", 32),
            ("model.patch_out_dim", 32),
            ("model.head_hidden_dim", 32),
            ("model.head_bottleneck_dim", 16),
            ("model.norm_last_layer", norm_last_layer),
        ],
    )
    return build_network(cfg, 0.0)


def _decayed(model: torch.nn.Module, decay_tokens: bool) -> set[str]:
    groups = param_groups(model, decay_tokens)
    ids = {id(p) for p in groups[0]["params"]}
    assert groups[0]["apply_wd"] and not groups[1]["apply_wd"]
    assert len(ids) + len(groups[1]["params"]) == sum(
        1 for p in model.parameters() if p.requires_grad
    )
    return {name for name, p in model.named_parameters() if id(p) in ids}


TOKENS = {"backbone.cls_token", "backbone.pos_embed", "backbone.masked_embed"}


def test_reference_grouping_decays_everything_but_biases_and_1d_parameters():
    net = _network()
    expected = {
        name
        for name, p in net.named_parameters()
        if not name.endswith(".bias") and p.ndim >= 2
    }
    assert _decayed(net, decay_tokens=True) == expected
    assert expected >= TOKENS  # iBOT decays the learned tokens
    assert "backbone.blocks.0.attn.qkv.weight" in expected
    assert "backbone.blocks.0.norm1.weight" not in expected  # 1-D
    # The prototypes' weight-norm magnitude g is [K, 1]: 2-D, so iBOT decays it too.
    assert "head.last_layer.parametrizations.weight.original0" in expected


def test_mimkit_grouping_also_spares_the_learned_tokens():
    net = _network()
    assert _decayed(net, decay_tokens=False) == _decayed(net, decay_tokens=True) - TOKENS


def test_frozen_magnitude_is_in_no_group():
    net = _network(norm_last_layer=True)
    names = _decayed(net, True)
    assert "head.last_layer.parametrizations.weight.original0" not in names
    assert "head.last_layer.parametrizations.weight.original1" in names


def _params_with_grads(norms: list[float]) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    params = []
    for i, norm in enumerate(norms):
        p = torch.nn.Parameter(torch.zeros(3 + i, 2))
        grad = torch.randn(p.shape, generator=g)
        p.grad = grad * norm / grad.norm()
        params.append(p)
    return params


def test_per_parameter_clipping_bounds_each_norm_and_keeps_small_ones():
    norms = [0.5, 2.9, 3.5, 40.0, 1e4]
    params = _params_with_grads(norms)
    before = [p.grad.clone() for p in params]
    total = clip_gradients(params, 3.0, "param")
    assert total.item() == pytest.approx(sum(n * n for n in norms) ** 0.5, rel=1e-5)
    for p, old, norm in zip(params, before, norms, strict=True):
        assert p.grad.norm() <= 3.0 * (1 + 1e-6)  # float32 rounding of the product
        if norm < 3.0:
            assert torch.equal(p.grad, old)  # under the limit: untouched
        else:  # scaled by 3 / (norm + 1e-6), direction kept
            torch.testing.assert_close(p.grad, old * (3.0 / (norm + 1e-6)))


def test_global_clipping_bounds_the_joint_norm_and_keeps_ratios():
    params = _params_with_grads([0.5, 2.9, 40.0])
    before = [p.grad.clone() for p in params]
    total = clip_gradients(params, 3.0, "global")
    assert total.item() == pytest.approx((0.5**2 + 2.9**2 + 40.0**2) ** 0.5, rel=1e-5)
    joint = torch.stack([p.grad.norm() for p in params]).norm()
    assert joint == pytest.approx(3.0, rel=1e-4)
    scale = params[0].grad.norm() / before[0].norm()
    for p, old in zip(params, before, strict=True):
        torch.testing.assert_close(p.grad, old * scale)


@pytest.mark.parametrize("mode", ["global", "param"])
def test_clip_norm_zero_only_measures(mode):
    params = _params_with_grads([0.5, 40.0])
    before = [p.grad.clone() for p in params]
    assert clip_gradients(params, 0.0, mode).item() == pytest.approx((0.25 + 1600) ** 0.5)
    assert all(torch.equal(p.grad, b) for p, b in zip(params, before, strict=True))


def test_unknown_clip_mode_is_refused():
    with pytest.raises(ValueError, match="clip mode"):
        clip_gradients(_params_with_grads([1.0]), 1.0, "layer")


@pytest.mark.parametrize("mode", ["global", "param"])
def test_frozen_last_layer_gradients_are_dropped_before_clipping(make_config, monkeypatch, mode):
    cfg = make_config(
        **{"optim.freeze_last_layer": 1.0, "optim.clip_mode": mode, "run.max_steps": 1}
    )
    loop = build_pretraining(cfg)
    head = loop.method.student.head
    frozen = {id(p) for p in head.last_layer_parameters()}
    seen: list[set[int]] = []
    real = loop_module.clip_gradients

    def spy(params, max_norm, clip_mode):
        params = list(params)
        seen.append({id(p) for p in params if p.grad is not None})
        assert clip_mode == mode
        return real(params, max_norm, clip_mode)

    monkeypatch.setattr(loop_module, "clip_gradients", spy)
    try:
        loop.fit()
    finally:
        loop.close()
    assert len(seen) == 1 and seen[0] and not (seen[0] & frozen)


def test_adamw_is_fused_where_the_kernel_exists():
    model = _network()
    fused = adamw(param_groups(model), torch.device("cpu"))
    assert fused.defaults["fused"] is True
    plain = torch.optim.AdamW(param_groups(model), lr=0.0, weight_decay=0.0, foreach=False)
    # Same update rule as torch's per-tensor loop, over a few steps with decay on one group.
    copies = [p.detach().clone() for p in model.parameters()]
    for opt in (fused, plain):
        for p, c in zip(model.parameters(), copies, strict=True):
            p.data.copy_(c)
        set_hyperparameters(opt, 1e-2, 0.05)
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        if opt is fused:
            after_fused = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(after_fused, model.parameters(), strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)
