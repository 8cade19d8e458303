import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mimkit.errors import ConfigError
from mimkit.masking import block_mask, random_mask
from mimkit.masking.random_block import default_min_patches

FAST = settings(max_examples=20, deadline=None)


@FAST
@given(b=st.integers(1, 9), n=st.integers(1, 256), r=st.floats(0, 0.99), seed=st.integers(0, 99))
def test_random_mask_exact_count(b, n, r, seed):
    m = random_mask(b, n, r, torch.Generator().manual_seed(seed), "cpu")
    assert m.shape == (b, n) and m.dtype == torch.bool
    assert (m.sum(1) == math.floor(r * n + 1e-9)).all()


def test_random_mask_is_uniform():
    m = random_mask(20000, 10, 0.3, torch.Generator().manual_seed(0))
    freq = m.float().mean(0)
    assert torch.allclose(freq, torch.full_like(freq, 0.3), atol=0.02)


def test_random_mask_deterministic():
    a = random_mask(4, 49, 0.4, torch.Generator().manual_seed(1))
    b = random_mask(4, 49, 0.4, torch.Generator().manual_seed(1))
    c = random_mask(4, 49, 0.4, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@FAST
@given(b=st.integers(1, 7), grid=st.integers(2, 16), r=st.floats(0, 0.9), seed=st.integers(0, 999))
def test_block_never_exceeds_budget(b, grid, r, seed):
    m = block_mask(b, grid, r, torch.Generator().manual_seed(seed))
    assert m.shape == (b, grid, grid) and m.dtype == torch.bool
    assert (m.flatten(1).sum(1) <= math.floor(r * grid * grid + 1e-9)).all()


@pytest.mark.parametrize("grid, r", [(14, 0.1), (14, 0.3), (14, 0.5), (8, 0.4), (16, 0.25)])
def test_block_coverage_close_to_budget(grid, r):
    m = block_mask(500, grid, r, torch.Generator().manual_seed(0))
    budget = math.floor(r * grid * grid + 1e-9)
    cover = m.flatten(1).sum(1).float()
    assert (cover <= budget).all()
    assert cover.mean() >= 0.85 * budget  # BEiT stops a little short of the budget


def _is_rectangle(m: torch.Tensor) -> bool:
    rows = m.any(1).nonzero().flatten()
    cols = m.any(0).nonzero().flatten()
    if len(rows) == 0:
        return True
    return bool(m[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()) and int(
        m.sum()
    ) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


def test_single_placement_is_a_rectangle():
    # With min_patches == budget the first block takes about the whole budget, so most masks
    # are a single placement, i.e. one rectangle.
    m = block_mask(300, 14, 30 / 196, torch.Generator().manual_seed(0), min_patches=30)
    assert sum(_is_rectangle(x) for x in m) >= 0.6 * len(m)
    # A one-patch budget is always a single 1x1 rectangle.
    one = block_mask(50, 14, 1 / 196, torch.Generator().manual_seed(0), min_patches=1)
    assert (one.flatten(1).sum(1) == 1).all()


def beit_reference(grid, budget, min_patches, rng):
    """BEiT / iBOT's MaskingGenerator, one image at a time with Python loops."""
    mask = [[False] * grid for _ in range(grid)]
    count = 0
    log_a = (math.log(0.3), math.log(1 / 0.3))
    while count < budget:
        remaining = budget - count
        delta = 0
        for _ in range(10):
            target = rng.uniform(min_patches, remaining)
            ar = math.exp(rng.uniform(*log_a))
            h = int(round(math.sqrt(target * ar)))
            w = int(round(math.sqrt(target / ar)))
            if w < grid and h < grid:
                top = rng.randint(0, grid - h)
                left = rng.randint(0, grid - w)
                covered = sum(
                    mask[i][j] for i in range(top, top + h) for j in range(left, left + w)
                )
                if 0 < h * w - covered <= remaining:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if not mask[i][j]:
                                mask[i][j] = True
                                delta += 1
            if delta > 0:
                break
        if delta == 0:
            break
        count += delta
    return count


@pytest.mark.parametrize("r", [0.2, 0.4])
def test_block_coverage_matches_beit_reference(r):
    import random

    rng = random.Random(0)
    budget = math.floor(r * 196)
    ref = sum(beit_reference(14, budget, 16, rng) for _ in range(400)) / 400
    ours = block_mask(400, 14, r, torch.Generator().manual_seed(0)).flatten(1).sum(1)
    assert abs(ours.float().mean().item() - ref) < 0.03 * budget


def test_blocks_have_no_isolated_patches():
    m = block_mask(200, 14, 0.4, torch.Generator().manual_seed(3))
    # Blocks have area >= 2 almost always, so a masked patch has a masked 4-neighbour.
    pad = torch.nn.functional.pad(m.float(), (1, 1, 1, 1))
    nb = pad[:, :-2, 1:-1] + pad[:, 2:, 1:-1] + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]
    isolated = m & (nb == 0)
    assert isolated.float().mean() < 0.01


def test_block_deterministic_and_ratio_tensor():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    r = torch.tensor([0.1, 0.3, 0.5])
    a, b = block_mask(3, 14, r, g1), block_mask(3, 14, r, g2)
    assert torch.equal(a, b)
    assert (a.flatten(1).sum(1) <= torch.tensor([19, 58, 98])).all()


def test_block_zero_ratio_and_tiny_grid():
    assert not block_mask(4, 14, 0.0).any()
    m = block_mask(64, 2, 0.5, torch.Generator().manual_seed(0))
    assert (m.flatten(1).sum(1) <= 2).all() and m.any()
    assert block_mask(3, (4, 6), 0.5).shape == (3, 4, 6)


def test_default_min_patches():
    assert default_min_patches(14, 14) == 16
    assert default_min_patches(28, 28) == 64
    assert default_min_patches(2, 2) == 1


def test_block_errors():
    with pytest.raises(ConfigError, match="ratio"):
        block_mask(2, 8, 1.5)
    with pytest.raises(ConfigError, match="aspect"):
        block_mask(2, 8, 0.5, aspect=(2.0, 1.0))
    with pytest.raises(ConfigError, match="min_patches"):
        block_mask(2, 8, 0.5, min_patches=0)
