import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mimkit.errors import ConfigError
from mimkit.masking import block_mask, random_mask
from mimkit.masking.random_block import reference_min_patches

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
@given(
    b=st.integers(1, 7),
    gh=st.integers(1, 16),
    gw=st.integers(1, 16),
    r=st.floats(0, 0.9),
    seed=st.integers(0, 999),
)
def test_block_never_exceeds_the_real_budget(b, gh, gw, r, seed):
    m = block_mask(b, (gh, gw), r, torch.Generator().manual_seed(seed))
    assert m.shape == (b, gh, gw) and m.dtype == torch.bool
    assert (m.flatten(1).sum(1) <= r * gh * gw + 1e-9).all()  # mimkit's rounding slack


@pytest.mark.parametrize("grid, r", [(14, 0.1), (14, 0.3), (14, 0.5), (8, 0.4), (16, 0.25)])
def test_block_coverage_close_to_budget(grid, r):
    m = block_mask(500, grid, r, torch.Generator().manual_seed(0))
    budget = r * grid * grid
    cover = m.flatten(1).sum(1).float()
    assert (cover <= budget).all()
    assert cover.mean() >= 0.85 * budget  # BEiT stops a little short of the budget


def _rectangle(m: torch.Tensor) -> tuple[int, int] | None:
    """``(height, width)`` when the masked patches form one filled rectangle, else None."""
    rows = m.any(1).nonzero().flatten()
    cols = m.any(0).nonzero().flatten()
    if len(rows) == 0:
        return None
    h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    return (h, w) if int(m.sum()) == h * w else None


def _could_come_from(h: int, w: int, min_area: float, aspect: tuple[float, float]) -> bool:
    """Whether round(sqrt(t*a)) = h, round(sqrt(t/a)) = w for some t >= min_area and a in
    aspect: sqrt(t*a) in [h-.5, h+.5] and sqrt(t/a) in [w-.5, w+.5] bound t and a."""
    t_hi = (h + 0.5) * (w + 0.5)
    a_lo, a_hi = (h - 0.5) / (w + 0.5), (h + 0.5) / max(w - 0.5, 1e-9)
    return t_hi >= min_area and a_hi >= aspect[0] and a_lo <= aspect[1]


def test_single_placement_is_a_rectangle():
    # With min_patches == budget the first block takes about the whole budget, so most masks
    # are a single placement, i.e. one rectangle.
    m = block_mask(300, 14, 30 / 196, torch.Generator().manual_seed(0), min_patches=30)
    assert sum(_rectangle(x) is not None for x in m) >= 0.6 * len(m)
    # A one-patch budget is always a single 1x1 rectangle.
    one = block_mask(50, 14, 1 / 196, torch.Generator().manual_seed(0), min_patches=1)
    assert (one.flatten(1).sum(1) == 1).all()


@pytest.mark.parametrize(
    ("grid", "r", "aspect"), [(14, 0.09, (0.3, 1 / 0.3)), ((12, 16), 0.09, (0.5, 2.0))]
)
def test_blocks_respect_minimum_area_and_aspect_range(grid, r, aspect):
    # A budget of about 17.5 patches: after the first block (target area >= 16) at most 3
    # patches are left, so a rectangular mask is one block, or one block grown by a few
    # patches along a side, which still passes the check below.
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    min_area = (min(gh, gw) // 3) ** 2  # 16 on 14x14 and on 12x16
    m = block_mask(1000, grid, r, torch.Generator().manual_seed(1), aspect=aspect)
    shapes = [s for s in map(_rectangle, m) if s is not None]
    assert len(shapes) > 300
    assert all(_could_come_from(h, w, min_area, aspect) for h, w in shapes)
    # Nothing clearly below the minimum area (a 3x3 block cannot come from a target >= 16).
    assert min(h * w for h, w in shapes) >= 12


def reference_rule(
    gh: int, gw: int, r: float, rng: random.Random, aspect: tuple[float, float] = (0.3, 1 / 0.3)
) -> list[list[bool]]:
    """The stated rule, one image at a time: real budget r*H*W, minimum area
    (min(H, W) // 3) ** 2, blocks of height < H and width < W, stop after 10 failures."""
    mask = [[False] * gw for _ in range(gh)]
    budget, count = r * gh * gw, 0
    min_area = (min(gh, gw) // 3) ** 2
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    while count < budget:
        left_over = budget - count
        placed = 0
        for _ in range(10):
            area = rng.uniform(min_area, left_over)
            a = math.exp(rng.uniform(log_lo, log_hi))
            h, w = round(math.sqrt(area * a)), round(math.sqrt(area / a))
            if not (h < gh and w < gw):
                continue
            top, left = rng.randint(0, gh - h), rng.randint(0, gw - w)
            cells = [(i, j) for i in range(top, top + h) for j in range(left, left + w)]
            new = [(i, j) for i, j in cells if not mask[i][j]]
            if 0 < len(new) <= left_over:
                for i, j in new:
                    mask[i][j] = True
                placed = len(new)
                break
        if placed == 0:
            break
        count += placed
    return mask


def _count_and_boundary(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked patches and masked/unmasked neighbour pairs per image, for ``[B, H, W]``."""
    m = mask.float()
    edges = (m[:, 1:] != m[:, :-1]).flatten(1).sum(1) + (m[:, :, 1:] != m[:, :, :-1]).flatten(
        1
    ).sum(1)
    return m.flatten(1).sum(1), edges.float()


def _within_3_se(a: torch.Tensor, b: torch.Tensor) -> bool:
    se = math.sqrt(a.var().item() / len(a) + b.var().item() / len(b))
    return abs(a.mean().item() - b.mean().item()) <= 3 * se


@pytest.mark.parametrize(
    ("gh", "gw", "r"), [(14, 14, 0.3), (14, 14, 0.47), (8, 8, 0.35), (8, 12, 0.3)]
)
def test_block_statistics_match_the_reference_rule(gh, gw, r):
    rng = random.Random(0)
    ref = torch.tensor([reference_rule(gh, gw, r, rng) for _ in range(4000)])
    ours = block_mask(16000, (gh, gw), r, torch.Generator().manual_seed(0))
    ref_count, ref_edges = _count_and_boundary(ref)
    our_count, our_edges = _count_and_boundary(ours)
    assert _within_3_se(our_count, ref_count), (our_count.mean(), ref_count.mean())
    assert _within_3_se(our_edges, ref_edges), (our_edges.mean(), ref_edges.mean())


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


def test_reference_min_patches():
    assert reference_min_patches(14, 14) == 16
    assert reference_min_patches(8, 8) == 4
    assert reference_min_patches(16, 16) == 25
    assert reference_min_patches(12, 16) == 16
    assert reference_min_patches(2, 2) == 0


def test_block_errors():
    with pytest.raises(ConfigError, match="ratio"):
        block_mask(2, 8, 1.5)
    with pytest.raises(ConfigError, match="aspect"):
        block_mask(2, 8, 0.5, aspect=(2.0, 1.0))
    with pytest.raises(ConfigError, match="min_patches"):
        block_mask(2, 8, 0.5, min_patches=-1)
