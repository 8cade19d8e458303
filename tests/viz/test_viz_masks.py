import numpy as np
import pytest
import torch

from mimkit.commands.masks import DEFAULT_STRATEGIES
from mimkit.masking import parse_score, parse_strategy, select_mask
from mimkit.models import build_vit
from mimkit.viz import (
    compute_masks,
    figure_pixels,
    mask_overlay,
    panels_request,
    patches_to_pixels,
    resolve_layers,
)
from mimkit.viz import resolve_strategies as resolve
from mimkit.viz.masks import Panel, render_masks


def resolve_strategies(texts, depth, readouts=frozenset({"cls", "rollout"})):
    return resolve(texts, depth, readouts, "vit_nano")


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return build_vit("vit_nano", 16, 4).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_high_overlay_covers_exactly_the_selected_patches(nano, images):
    ratio = 0.4
    strategies = resolve_strategies(["high"], nano.depth)
    result = compute_masks(nano, images, strategies, [0], ratio, seed=0)
    # The same mask, straight from the masking package.
    spec = parse_score("raw:-1", nano.depth)
    readout = nano.forward_features(images, request=spec.readout_request(nano.depth)).readout
    expected = select_mask(spec.compute(readout), ratio, "high").reshape(3, 4, 4)
    assert torch.equal(result.masks["high@raw:2"], expected)
    rgb = np.random.default_rng(0).uniform(0.0, 0.5, size=(16, 16, 3))
    for b in range(3):
        over = mask_overlay(rgb, expected[b])
        changed = (over != rgb).any(-1)
        assert np.array_equal(changed, patches_to_pixels(expected[b].numpy(), 16))
        assert changed.sum() == 16 * int(0.4 * 16)  # 6 patches of 4x4 pixels


def test_patches_to_pixels_layout():
    m = np.zeros((2, 2), dtype=bool)
    m[0, 1] = True
    px = patches_to_pixels(m, 4)
    assert px[:2, 2:].all() and not px[2:].any() and not px[:2, :2].any()
    with pytest.raises(ValueError):
        patches_to_pixels(m, 5)


def test_every_strategy_masks_every_image_deterministically(nano, images):
    strategies = resolve_strategies(DEFAULT_STRATEGIES, nano.depth)
    assert len(strategies) == len(DEFAULT_STRATEGIES)
    a = compute_masks(nano, images, strategies, [0, -1 + nano.depth], 0.4, seed=3)
    b = compute_masks(nano, images, strategies, [0, 2], 0.4, seed=3)
    c = compute_masks(nano, images, strategies, [0, 2], 0.4, seed=4)
    for label, m in a.masks.items():
        assert m.shape == (3, 4, 4) and m.flatten(1).any(1).all(), label
        assert m.flatten(1).sum(1).le(6).all(), label
        assert torch.equal(m, b.masks[label])
    assert not torch.equal(a.masks["random"], c.masks["random"])
    assert set(a.attention) == {0, 2} and a.rollout.shape == (3, 16)


def test_one_teacher_forward_with_the_union_request(nano, images, monkeypatch):
    calls = []
    original = nano.forward_features

    def spy(x, mask=None, request=None):
        calls.append(request)
        return original(x, mask, request)

    monkeypatch.setattr(nano, "forward_features", spy)
    strategies = resolve_strategies(["high@raw:1", "low@rollout:1-2", "block"], nano.depth)
    compute_masks(nano, images, strategies, [0], 0.3)
    assert len(calls) == 1
    assert calls[0] == panels_request(strategies, [0], nano.depth, nano.readouts)
    assert calls[0].cls_layers == {0, 1} and calls[0].rollout_ranges == {(0, 2), (1, 2)}


def test_layer_and_strategy_validation():
    from mimkit.errors import ConfigError

    assert resolve_layers(None, 6) == [0, 2, 5]
    assert resolve_layers([0, 2, -1], 6) == [0, 2, 5]
    assert resolve_layers(None, 1) == [0]
    with pytest.raises(ConfigError, match="out of range"):
        resolve_layers([6], 6)
    with pytest.raises(ConfigError):
        resolve_strategies(["high@raw:6"], 6)
    assert parse_strategy("high", 6).score.layers == (5,)


def test_render_has_the_announced_size(tmp_path):
    from PIL import Image

    rgb = np.zeros((8, 8, 3))
    panels = [Panel(f"p{i}", rgb, grid=2 if i % 2 else None) for i in range(7)]
    out = render_masks(panels, tmp_path / "x.png", "header", columns=3, panel_px=64)
    assert Image.open(out).size == figure_pixels(7, 3, 64)


def test_a_long_header_fits_the_figure(tmp_path):
    from PIL import Image

    # as `mimkit compare` titles its masks figure, over the image and two strategies
    header = (
        "masking families, Fashion-MNIST (10k), vit_nano 28 px / 4 px patches (7x7), narrow "
        "head  |  masks at the end of training, ratio 0.3, every image masked (first seed)"
    )
    panels = [Panel(f"p{i}", np.zeros((8, 8, 3))) for i in range(3)]
    out = render_masks(panels, tmp_path / "x.png", header, columns=3, panel_px=170)
    band = np.asarray(Image.open(out).convert("L"))[:30]  # the header's rows
    assert band.min() < 128  # the header is drawn
    edges = band[:, :4], band[:, -4:], band[:2], band[-2:]
    assert all(edge.min() == 255 for edge in edges)  # whole: not cut at any edge


def test_mix_follows_the_progress_of_training(nano, images):
    """masking.alpha's default ramp (0 -> 0.5): at the start of training mix is random, drawn
    from the same generator (the same place in the list), and later it is not."""
    mix = resolve_strategies(["mix@raw"], nano.depth)
    plain = resolve_strategies(["random"], nano.depth)
    start = compute_masks(nano, images, mix, [0], 0.5, seed=2, progress=0.0)
    random = compute_masks(nano, images, plain, [0], 0.5, seed=2)
    assert torch.equal(start.masks["mix:0:0.5:linear@raw:2"], random.masks["random"])
    end = compute_masks(nano, images, mix, [0], 0.5, seed=2, progress=1.0)
    assert not torch.equal(end.masks["mix:0:0.5:linear@raw:2"], random.masks["random"])
