"""mimkit's Swin: timm's numbers from the same weights, iBOT's masking on the final-stage
grid, and no attention read-out."""

import pytest
import torch

from mimkit.models import ReadoutRequest, backbone_spec, build_vit


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    m = build_vit("swin_nano").eval()  # 16 px, 2 px patches: 8x8 then a 4x4 final grid
    with torch.no_grad():
        m.masked_embed.normal_()
    return m


def images(b=2, size=16, seed=0):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_geometry_and_description(swin):
    spec = backbone_spec("swin_nano")
    assert (swin.grid_size(), spec.grid_size(), swin.num_patches) == (4, 4, 16)
    assert swin.embed_dim == 64 and swin.depth == 4 and swin.readouts == frozenset()
    f = swin(images())
    assert f.pooled.shape == (2, 64) and f.patches.shape == (2, 16, 64)
    torch.testing.assert_close(f.pooled, f.patches.mean(1))
    tiny = backbone_spec("swin_tiny")
    assert (tiny.grid_size(), tiny.depth, tiny.window, tiny.stage_strides[-1]) == (7, 12, 7, 32)


@pytest.mark.parametrize("arch", ["swin_nano", "swin_tiny"])
def test_same_numbers_as_timm_from_the_same_weights(arch):
    swin_mod = pytest.importorskip("timm.models.swin_transformer")
    torch.manual_seed(1)
    ours = build_vit(arch).eval()
    spec = ours.spec
    heads = tuple(spec.num_heads * 2**s for s in range(len(spec.depths)))
    theirs = swin_mod.SwinTransformer(
        img_size=spec.img_size,
        patch_size=spec.patch_size,
        embed_dim=spec.embed_dim,
        depths=spec.depths,
        num_heads=heads,
        window_size=spec.window,
        num_classes=0,
    ).eval()
    sd = {k: v for k, v in ours.state_dict().items() if k != "masked_embed"}
    theirs.load_state_dict(sd, strict=True)  # the same names, nothing left over
    x = images(2, spec.img_size, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).pooled, theirs(x), atol=1e-5, rtol=1e-4)


def test_mask_is_upsampled_to_the_patch_grid(swin):
    x = images()
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, 1, 2] = True  # one final-stage cell: 2x2 patch-embedding tokens
    tokens = swin._embed(x, mask)
    plain = swin._embed(x, None)
    changed = (tokens != plain).any(-1)  # [B, 8, 8]
    expect = torch.zeros(2, 8, 8, dtype=torch.bool)
    expect[:, 2:4, 4:6] = True
    assert torch.equal(changed, expect)
    torch.testing.assert_close(tokens[:, 2, 4], swin.masked_embed.expand(2, -1))
    full = torch.ones(2, 16, dtype=torch.bool)
    with torch.no_grad():
        a, b = swin(x, full).patches, swin(images(seed=5) * 3, full).patches
    torch.testing.assert_close(a, b)


def test_other_sizes_pad_their_windows(swin):
    with torch.no_grad():
        f = swin(images(2, 12))  # local-crop size: 6x6 then 3x3 grids, window 4 padded
    assert f.patches.shape == (2, 9, 64) and torch.isfinite(f.patches).all()
    outs = swin.last_blocks(images(), 4)
    assert len(outs) == 2  # the final stage has 2 blocks
    torch.testing.assert_close(outs[-1].pooled, swin(images()).pooled)


def test_no_attention_readout_and_its_own_no_decay_set(swin):
    with pytest.raises(ValueError, match="cannot report cls"):
        swin.forward_features(images(), request=ReadoutRequest(cls_layers=frozenset({0})))
    names = swin.no_weight_decay()
    assert "masked_embed" in names
    assert "layers.1.blocks.1.attn.relative_position_bias_table" in names
