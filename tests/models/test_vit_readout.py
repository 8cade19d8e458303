import pytest
import torch

from mimkit.errors import ConfigError
from mimkit.models import Features, ReadoutRequest, build_vit, resolve_layer, rollout_accumulate
from mimkit.models.vit import VisionTransformer


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    m = build_vit("vit_nano").eval()  # 16 px, patch 4, depth 3, 2 heads
    with torch.no_grad():  # non-trivial mask embedding and position embedding
        m.masked_embed.normal_()
        m.cls_token.normal_()
    return m


def all_tokens(f: Features) -> torch.Tensor:
    """``[B, 1+N, D]``: the pooled (CLS) token then the patches, a ViT's token layout."""
    return torch.cat([f.pooled[:, None], f.patches], dim=1)


def images(b=3, size=16, seed=0):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def explicit_attentions(vit: VisionTransformer, x: torch.Tensor, mask=None):
    """Per-block softmax(QK^T * scale) computed from the blocks' own qkv weights."""
    attns = []
    h = vit.prepare_tokens(x, mask)
    for blk in vit.blocks:
        y = blk.norm1(h)
        b, t, d = y.shape
        nh = blk.attn.num_heads
        qkv = y @ blk.attn.qkv.weight.T + blk.attn.qkv.bias
        q, k, v = qkv.reshape(b, t, 3, nh, d // nh).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) / (d // nh) ** 0.5, dim=-1)
        attns.append(a)
        out = (a @ v).transpose(1, 2).reshape(b, t, d)
        h = h + blk.attn.proj(out)
        h = h + blk.mlp(blk.norm2(h))
    return vit.norm(h), attns


REQUESTS = [
    ReadoutRequest(),
    ReadoutRequest(cls_layers=frozenset({2})),
    ReadoutRequest(cls_layers=frozenset({0, 1, 2})),
    ReadoutRequest(rollout_ranges=frozenset({(0, 2)})),
    ReadoutRequest(cls_layers=frozenset({1}), rollout_ranges=frozenset({(1, 2), (0, 0)})),
]


@pytest.mark.parametrize("request_", REQUESTS)
def test_readout_parity_with_fused_forward(vit, request_):
    x = images()
    with torch.no_grad():
        plain = all_tokens(vit(x))
        f = vit.forward_features(x, request=request_)
        tokens, readout = all_tokens(f), f.readout
    torch.testing.assert_close(tokens, plain, atol=1e-5, rtol=1e-5)
    assert set(readout.cls_attn) == set(request_.cls_layers)
    assert set(readout.rollout) == set(request_.rollout_ranges)


def test_cls_rows_and_rollout_match_explicit_attention(vit):
    x = images(4)
    req = ReadoutRequest(
        cls_layers=frozenset({0, 1, 2}), rollout_ranges=frozenset({(0, 2), (1, 2)})
    )
    with torch.no_grad():
        ref_tokens, attns = explicit_attentions(vit, x)
        f = vit.forward_features(x, request=req)
        tokens, readout = all_tokens(f), f.readout
    torch.testing.assert_close(tokens, ref_tokens, atol=1e-5, rtol=1e-5)
    n = vit.num_patches
    for layer, a in enumerate(attns):
        got = readout.cls_attn[layer]
        assert got.shape == (4, vit.num_heads, n)
        torch.testing.assert_close(got, a[:, :, 0, 1:], atol=1e-6, rtol=1e-5)
    for first, last in [(0, 2), (1, 2)]:
        t = n + 1
        r = torch.eye(t).expand(4, t, t)
        for a in attns[first : last + 1]:
            m = 0.5 * a.mean(1) + 0.5 * torch.eye(t)
            r = (m / m.sum(-1, keepdim=True)) @ r
        got = readout.rollout[(first, last)]
        torch.testing.assert_close(got, r[:, 0, 1:], atol=1e-6, rtol=1e-5)


def test_rollout_accumulate_order():
    a, b = torch.rand(2, 5, 5).softmax(-1), torch.rand(2, 5, 5).softmax(-1)
    r = rollout_accumulate(rollout_accumulate(None, a), b)
    ma = 0.5 * a + 0.5 * torch.eye(5)
    mb = 0.5 * b + 0.5 * torch.eye(5)
    ma, mb = ma / ma.sum(-1, keepdim=True), mb / mb.sum(-1, keepdim=True)
    torch.testing.assert_close(r, mb @ ma)
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 5))


def test_mask_embedding_replaces_masked_patches(vit):
    full = torch.ones(2, 4, 4, dtype=torch.bool)
    with torch.no_grad():
        a = all_tokens(vit.forward_features(images(2, seed=1), mask=full))
        b = all_tokens(vit.forward_features(images(2, seed=2) * 10, mask=full))
    torch.testing.assert_close(a, b)
    # a partial mask: masked tokens are the mask embedding (+ pos), unmasked ones are not
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, 0, :2] = True
    x = images(2)
    tok = vit.prepare_tokens(x, mask)
    plain = vit.prepare_tokens(x)
    pos = vit.interpolate_pos_embed(4, 4)
    flat = mask.flatten(1)
    torch.testing.assert_close(
        tok[:, 1:][flat], (vit.masked_embed + pos[0, 1:][flat[0]]).expand(2, -1, -1).reshape(-1, 64)
    )
    torch.testing.assert_close(tok[:, 1:][~flat], plain[:, 1:][~flat])
    torch.testing.assert_close(tok[:, 0], plain[:, 0])


def test_mask_shape_error(vit):
    with pytest.raises(ValueError, match="patches"):
        vit.forward_features(images(2), mask=torch.zeros(2, 3, 3, dtype=torch.bool))


@pytest.mark.parametrize("size", [8, 24, 32])
def test_pos_embed_interpolation_for_other_sizes(vit, size):
    x = images(2, size)
    g = size // vit.patch_size
    req = ReadoutRequest(cls_layers=frozenset({2}), rollout_ranges=frozenset({(0, 2)}))
    with torch.no_grad():
        f = vit.forward_features(x, request=req)
        tokens, readout = all_tokens(f), f.readout
        ref_tokens, attns = explicit_attentions(vit, x)
    assert tokens.shape == (2, g * g + 1, vit.embed_dim)
    assert vit.interpolate_pos_embed(g, g).shape == (1, g * g + 1, vit.embed_dim)
    torch.testing.assert_close(tokens, ref_tokens, atol=1e-5, rtol=1e-5)
    assert readout.cls_attn[2].shape == (2, vit.num_heads, g * g)
    assert readout.rollout[(0, 2)].shape == (2, g * g)
    assert torch.equal(vit.interpolate_pos_embed(4, 4), vit.pos_embed)


def test_indivisible_size_errors(vit):
    with pytest.raises(ValueError, match="divisible"):
        vit(images(1, 18))


def test_negative_layer_resolution(vit):
    assert [resolve_layer(i, vit.depth) for i in (-1, -3, 0, 2)] == [2, 0, 0, 2]
    for bad in (3, -4):
        match = f"layer {bad} is out of range for a backbone of depth 3"
        with pytest.raises(ConfigError, match=match):
            resolve_layer(bad, vit.depth)


def test_get_intermediate_layers(vit):
    x = images(2)
    with torch.no_grad():
        outs = vit.get_intermediate_layers(x, n=2)
        h = vit.prepare_tokens(x)
        per_block = []
        for blk in vit.blocks:
            h = blk(h)[0]
            per_block.append(vit.norm(h))
        last = all_tokens(vit(x))
        blocks = vit.last_blocks(x, 2)
    assert len(outs) == 2
    torch.testing.assert_close(all_tokens(blocks[-1]), outs[-1])
    torch.testing.assert_close(outs[0], per_block[1])
    torch.testing.assert_close(outs[1], per_block[2])
    torch.testing.assert_close(outs[-1], last, atol=1e-5, rtol=1e-5)
    assert len(vit.get_intermediate_layers(x, n=3)) == 3


def test_presets_geometry():
    m = build_vit("vit_mini")
    assert (m.grid_size(), m.num_patches, m.depth) == (8, 64, 6)
    assert build_vit("vit_nano", img_size=32).num_patches == 64
    with pytest.raises(ValueError, match="unknown arch"):
        build_vit("vit_giant")
