import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mimkit.errors import ConfigError
from mimkit.masking import select_mask

FAST = settings(max_examples=25, deadline=None)


def expected_k(r: float, n: int) -> int:
    return math.floor(r * n + 1e-9)


@FAST
@given(
    b=st.integers(1, 7),
    n=st.integers(1, 300),
    r=st.floats(0, 1),
    mode=st.sampled_from(["high", "low"]),
    seed=st.integers(0, 2**31),
)
def test_exact_count_and_extremes(b, n, r, mode, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, n, generator=g)
    m = select_mask(scores, r, mode)
    k = expected_k(r, n)
    assert m.dtype == torch.bool and m.shape == (b, n)
    assert (m.sum(1) == k).all()
    if 0 < k < n:
        masked = torch.where(m, scores, torch.nan)
        kept = torch.where(m, torch.nan, scores)
        if mode == "high":
            assert (masked.nan_to_num(math.inf).amin(1) >= kept.nan_to_num(-math.inf).amax(1)).all()
        else:
            assert (masked.nan_to_num(-math.inf).amax(1) <= kept.nan_to_num(math.inf).amin(1)).all()


def test_half_of_even_n_is_exact():
    for n in (10, 196, 64, 2):
        assert select_mask(torch.randn(3, n), 0.5).sum(1).tolist() == [n // 2] * 3
    # 0.3 * 10 is 2.9999999999999996 in floating point; we still want 3.
    assert select_mask(torch.randn(2, 10), 0.3).sum(1).tolist() == [3, 3]


def test_per_row_ratio_tensor():
    scores = torch.randn(4, 50)
    ratio = torch.tensor([0.0, 0.1, 0.5, 0.98])
    assert select_mask(scores, ratio, "low").sum(1).tolist() == [0, 5, 25, 49]


def test_high_is_top_k_exactly():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7]])
    assert select_mask(scores, 0.4, "high").tolist() == [[False, True, False, False, True]]
    assert select_mask(scores, 0.4, "low").tolist() == [[True, False, False, True, False]]


@FAST
@given(
    b=st.integers(1, 5),
    n=st.integers(4, 400),
    r=st.floats(0, 0.99),
    show_max=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**31),
)
def test_hint_reveals_right_count_from_top(b, n, r, show_max, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(b, n, generator=g)
    high = select_mask(scores, r, "high")
    hint = select_mask(scores, r, "hint", show_max=show_max, generator=g)
    k = expected_k(r, n)
    n_reveal = math.floor(show_max * r * n + 1e-9)
    pool = min(k, math.floor(show_max * n + 1e-9))
    assert not (hint & ~high).any()  # hint only removes patches from the high mask
    assert (hint.sum(1) == k - n_reveal).all()
    revealed = high & ~hint
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n).expand(b, n))
    assert (rank[revealed] < pool).all()


def test_hint_reveal_is_uniform_over_the_top():
    n, r, show_max = 100, 0.5, 0.1  # reveal 5 of the top 10, 40000 draws
    scores = torch.arange(n, dtype=torch.float32).flip(0).expand(4000, n)
    g = torch.Generator().manual_seed(0)
    hint = select_mask(scores, r, "hint", show_max=show_max, generator=g)
    freq = (~hint[:, :10]).float().mean(0)
    assert torch.allclose(freq, torch.full_like(freq, 0.5), atol=0.04)
    assert hint[:, 10:50].all()


def test_hint_small_ratio_reveals_only_masked():
    scores = torch.rand(50, 200)
    hint = select_mask(scores, 0.05, "hint", show_max=0.5)  # k=10, pool=min(10,100)
    high = select_mask(scores, 0.05, "high")
    assert (hint.sum(1) == 10 - 5).all()
    assert not (hint & ~high).any()


def test_determinism_and_device_agnostic_generator():
    scores = torch.rand(6, 49)
    a = select_mask(scores, 0.5, "hint", generator=torch.Generator().manual_seed(3))
    b = select_mask(scores, 0.5, "hint", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ratio=1.5), "ratio"),
        (dict(ratio=-0.1), "ratio"),
        (dict(ratio=0.3, mode="middle"), "selection"),
        (dict(ratio=0.3, mode="hint", show_max=0.0), "show_max"),
        (dict(ratio=torch.tensor([0.2, 2.0])), "ratio"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        select_mask(torch.rand(2, 10), **kwargs)
