"""``--arch timm:NAME``: timm's own ViT with mimkit's mask token and attention read-outs."""

import pytest
import torch

from mimkit.errors import ConfigError
from mimkit.models import ReadoutRequest, backbone_spec, build_vit

timm = pytest.importorskip("timm")
ARCH = "timm:deit_tiny_patch16_224"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_vit(ARCH, 16, 4).eval()  # 4x4 grid, 12 blocks of 3 heads
    with torch.no_grad():
        m.masked_embed.normal_()
    return m


def images(b=3, size=16, seed=0):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def explicit(model, x):
    """Per-block softmax(q k^T * scale) from each block's own weights, and the output."""
    vit = model.vit
    h = model._tokens(x, None)
    attns = []
    for blk in vit.blocks:
        y = blk.norm1(h)
        b, t, d = y.shape
        nh = blk.attn.num_heads
        q, k, v = (
            (y @ blk.attn.qkv.weight.T + blk.attn.qkv.bias)
            .reshape(b, t, 3, nh, -1)
            .permute(2, 0, 3, 1, 4)
        )
        a = torch.softmax(q @ k.transpose(-2, -1) * (d // nh) ** -0.5, dim=-1)
        attns.append(a)
        h = h + blk.attn.proj((a @ v).transpose(1, 2).reshape(b, t, d))
        h = h + blk.mlp(blk.norm2(h))
    return vit.norm(h), attns


def test_description_from_timm():
    spec = backbone_spec(ARCH, 16, 4)
    assert (spec.family, spec.embed_dim, spec.depth, spec.num_heads) == ("timm", 192, 12, 3)
    assert spec.grid_size() == 4 and spec.readouts == frozenset({"cls", "rollout"})
    with pytest.raises(ConfigError, match="timm has no model"):
        backbone_spec("timm:no_such_model_xyz")
    with pytest.raises(ConfigError, match="not a ViT"):
        backbone_spec("timm:resnet18")


def test_readout_equals_explicit_attention_from_the_same_weights(model):
    x = images()
    req = ReadoutRequest(cls_layers=frozenset({0, 5, 11}), rollout_ranges=frozenset({(3, 11)}))
    with torch.no_grad():
        f = model.forward_features(x, request=req)
        plain = model(x)
        ref, attns = explicit(model, x)
    torch.testing.assert_close(f.patches, plain.patches, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(f.patches, ref[:, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(f.pooled, ref[:, 0], atol=1e-5, rtol=1e-5)
    for layer in (0, 5, 11):
        torch.testing.assert_close(f.readout.cls_attn[layer], attns[layer][:, :, 0, 1:])
    t = 17
    r = torch.eye(t).expand(3, t, t)
    for a in attns[3:12]:
        m = 0.5 * a.mean(1) + 0.5 * torch.eye(t)
        r = (m / m.sum(-1, keepdim=True)) @ r
    torch.testing.assert_close(f.readout.rollout[(3, 11)], r[:, 0, 1:], atol=1e-6, rtol=1e-5)


def test_only_the_named_blocks_leave_timms_forward(model, monkeypatch):
    from mimkit.models import timm_vit

    seen = []
    real = timm_vit._block_with_readout

    def spy(blk, *args):
        seen.append(blk)
        return real(blk, *args)

    monkeypatch.setattr(timm_vit, "_block_with_readout", spy)
    with torch.no_grad():
        model.forward_features(images(), request=ReadoutRequest(cls_layers=frozenset({7})))
    assert seen == [model.vit.blocks[7]]


def test_mask_token_replaces_patches_before_the_position_embedding(model):
    x = images(2)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, 5] = True
    tokens, plain = model._tokens(x, mask), model._tokens(x, None)
    changed = (tokens != plain).any(-1)[:, 1:]  # after the CLS token
    assert torch.equal(changed, mask)
    pos = model.vit.pos_embed[0, 1 + 5]
    torch.testing.assert_close(tokens[:, 1 + 5], (model.masked_embed[0] + pos).expand(2, -1))


def test_smaller_crops_and_no_decay_names(model):
    with torch.no_grad():
        assert model(images(2, 8)).patches.shape == (2, 4, 192)
    assert {"masked_embed", "vit.cls_token", "vit.pos_embed"} <= model.no_weight_decay()
