import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mimkit.errors import ConfigError
from mimkit.masking import cls_attention_scores, minmax_normalize
from mimkit.models import ReadoutRequest
from mimkit.models.readout import ReadoutRecorder

FAST = settings(max_examples=15, deadline=None)


def rollout_scores(attentions):
    """The rollout a backbone reports, fed the per-block maps ``[B, H, T, T]`` in order."""
    if not attentions:
        raise ValueError("rollout needs at least one attention map")
    last = len(attentions) - 1
    recorder = ReadoutRecorder(ReadoutRequest(rollout_ranges=frozenset({(0, last)})))
    for i, a in enumerate(attentions):
        recorder.record(i, None, a.mean(1))
    return recorder.readout.rollout[(0, last)]


def random_attention(b, h, t, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, t, t, generator=g, dtype=dtype).mul(2).softmax(-1)


def reference_rollout(attentions):
    """Abnar & Zuidema with explicit loops, one image and one layer at a time, in numpy."""
    b, _, t, _ = attentions[0].shape
    out = np.zeros((b, t - 1))
    for i in range(b):
        r = np.eye(t)
        for a in attentions:  # first block first; later blocks multiply on the left
            a = a[i].numpy()
            m = 0.5 * a.mean(axis=0) + 0.5 * np.eye(t)
            for row in range(t):
                m[row] = m[row] / m[row].sum()
            r = m @ r
        out[i] = r[0, 1:]
    return torch.from_numpy(out)


@FAST
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 4),
    t=st.integers(2, 20),
    layers=st.integers(1, 5),
    seed=st.integers(0, 1000),
)
def test_rollout_matches_reference(b, h, t, layers, seed):
    atts = [random_attention(b, h, t, seed + i) for i in range(layers)]
    got = rollout_scores(atts)
    assert got.shape == (b, t - 1)
    torch.testing.assert_close(got, reference_rollout(atts), rtol=1e-9, atol=1e-12)


def test_rollout_float32_and_order_matters():
    atts = [random_attention(2, 3, 10, s, torch.float32) for s in range(3)]
    ref = reference_rollout([a.double() for a in atts]).float()
    torch.testing.assert_close(rollout_scores(atts), ref, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(rollout_scores(atts[::-1]), ref, atol=1e-4)


@FAST
@given(b=st.integers(1, 4), h=st.integers(1, 6), n=st.integers(1, 50), seed=st.integers(0, 999))
def test_cls_reductions_match_formulas(b, h, n, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(b, h, n, generator=g, dtype=torch.float64).softmax(-1)
    np_a = a.numpy()
    for i in range(b):
        for j in range(n):
            col = np_a[i, :, j]
            s_mean = cls_attention_scores(a, "mean")[i, j].item()
            s_log = cls_attention_scores(a, "log")[i, j].item()
            s_pow = cls_attention_scores(a, "power", 0.3)[i, j].item()
            assert s_mean == pytest.approx(sum(col) / h)
            assert s_log == pytest.approx(sum(np.log(c) for c in col) / h)
            assert s_pow == pytest.approx(sum(c**0.3 for c in col) / h)


def test_log_clamps_zero_and_half_precision():
    a = torch.tensor([[[0.0, 1.0], [0.5, 0.5]]])
    s = cls_attention_scores(a, "log")
    assert torch.isfinite(s).all()
    assert s[0, 0] < s[0, 1]
    h = cls_attention_scores(a.half(), "power", 2.0)
    assert h.dtype == torch.float32 and torch.allclose(h, torch.tensor([[0.125, 0.625]]))


def test_reduction_errors():
    a = torch.rand(1, 2, 3)
    with pytest.raises(ConfigError, match="reduction"):
        cls_attention_scores(a, "median")
    with pytest.raises(ConfigError, match="exponent"):
        cls_attention_scores(a, "power", -1.0)


def test_minmax_normalize():
    s = torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]])
    assert minmax_normalize(s).tolist() == [[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]]
