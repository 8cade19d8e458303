"""Position embeddings of grids other than the trained one: exact resize or DINO's rule."""

from __future__ import annotations

import math

import pytest
import torch

from mimkit.errors import ConfigError
from mimkit.models import backbone_spec, build_backbone


def _ramp_vit(mode: str) -> torch.nn.Module:
    """A 14x14 ViT whose patch position embedding is the column index (a linear ramp)."""
    vit = build_backbone(backbone_spec("vit_nano", 56, 4), pos_interpolation=mode)  # 14x14 grid
    with torch.no_grad():
        cols = torch.arange(14.0).repeat(14)  # patch (i, j) -> j
        vit.pos_embed[0, 1:] = cols[:, None].expand(-1, vit.embed_dim)
        vit.pos_embed[0, 0] = -7.0
    return vit


def _cubic_1d(values: list[float], src: float, a: float = -0.75) -> float:
    """Cubic convolution (Keys, a = -0.75 as in PyTorch) of ``values`` at position ``src``,
    with the border values repeated."""

    def w(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a if x < 2 else 0.0

    i0 = math.floor(src)
    n = len(values)
    return sum(w(src - k) * values[min(max(k, 0), n - 1)] for k in range(i0 - 1, i0 + 3))


@pytest.mark.parametrize(("mode", "scale"), [("size", 6 / 14), ("dino", 6.1 / 14)])
def test_resampling_positions_follow_the_stated_scale(mode, scale):
    # Output column j reads the input at (j + 0.5) / scale - 0.5: the scale is 6/14 for an
    # exact resize to 6 columns, (6 + 0.1)/14 for DINO / iBOT's interpolate_pos_encoding.
    with torch.no_grad():
        pos = _ramp_vit(mode).interpolate_pos_embed(6, 6)
    assert pos.shape == (1, 1 + 36, 64)
    assert torch.equal(pos[0, 0], torch.full((64,), -7.0))  # the CLS position is kept
    grid = pos[0, 1:, 0].reshape(6, 6)
    ramp = [float(j) for j in range(14)]
    expected = [_cubic_1d(ramp, (j + 0.5) / scale - 0.5) for j in range(6)]
    for row in grid:  # every row the same: the ramp runs along the columns only
        torch.testing.assert_close(row, torch.tensor(expected), atol=1e-4, rtol=0)


def test_the_two_rules_differ_on_local_crops():
    with torch.no_grad():
        size = _ramp_vit("size").interpolate_pos_embed(6, 6)
        dino = _ramp_vit("dino").interpolate_pos_embed(6, 6)
    assert (size - dino).abs().max() > 0.1


def test_the_trained_grid_is_used_as_is():
    for mode in ("size", "dino"):
        vit = _ramp_vit(mode)
        assert vit.interpolate_pos_embed(14, 14) is vit.pos_embed


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="pos_interpolation"):
        build_backbone(backbone_spec("vit_nano"), pos_interpolation="nearest")


def test_dino_interpolation_is_for_mimkits_vit_only():
    with pytest.raises(ConfigError, match="pos_interpolation 'dino' applies to mimkit's ViT"):
        build_backbone(backbone_spec("swin_nano"), pos_interpolation="dino")
