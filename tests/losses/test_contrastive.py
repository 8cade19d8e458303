import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mimkit.errors import ConfigError
from mimkit.losses import DenseContrastiveLoss
from mimkit.train.logging import read_log


def _train_conftest():
    """tests/train/conftest.py, loaded by path (test folders are not packages)."""
    path = Path(__file__).resolve().parents[1] / "train" / "conftest.py"
    spec = importlib.util.spec_from_file_location("mimkit_train_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loop_reference(emb: torch.Tensor, scores: torch.Tensor, k: int, tau: float) -> float:
    """docs/method.md's contrastive term with Python loops, one image and pair at a time."""
    g, b, n, _ = emb.shape
    z = F.normalize(emb.double(), dim=-1)
    total, count = 0.0, 0
    for i in range(b):
        pos, neg = [], []
        for c in range(g):
            order = sorted(range(n), key=lambda p: -float(scores[c, i, p]))
            pos += [z[c, i, p] for p in order[:k]]
            neg += [z[c, i, p] for p in order[-k:]]
        for a in range(len(pos)):
            negs = sum(math.exp(float(pos[a] @ q) / tau) for q in neg)
            for j in range(len(pos)):
                if j == a:
                    continue
                e = math.exp(float(pos[a] @ pos[j]) / tau)
                total += -math.log(e / (e + negs))
                count += 1
    return total / count


@pytest.mark.parametrize(
    "g,b,n,d,k,tau",
    [(2, 3, 16, 8, 4, 0.2), (3, 2, 9, 5, 1, 0.5), (2, 1, 10, 4, 5, 0.1), (4, 2, 25, 6, 3, 1.0)],
)
def test_matches_loop_reference(g, b, n, d, k, tau):
    gen = torch.Generator().manual_seed(g * 100 + n)
    emb = torch.randn(g, b, n, d, generator=gen, dtype=torch.float64)
    scores = torch.rand(g, b, n, generator=gen)
    got = DenseContrastiveLoss(k, tau)(emb, scores)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(loop_reference(emb, scores, k, tau), rel=1e-9, abs=1e-9)


def test_rows_then_pairs_is_the_same_loss():
    """The step computes only the rows the loss reads; they must give the same number."""
    gen = torch.Generator().manual_seed(3)
    g, b, n, d, k = 3, 4, 12, 5, 2
    emb = torch.randn(g, b, n, d, generator=gen, dtype=torch.float64)
    scores = torch.rand(g, b, n, generator=gen)
    loss = DenseContrastiveLoss(k, 0.3)
    high, low = loss.rows(scores)
    flat = emb.reshape(g * b * n, d)
    got = loss.pairs(flat[high].reshape(b, g * k, d), flat[low].reshape(b, g * k, d))
    assert got.item() == pytest.approx(loop_reference(emb, scores, k, 0.3), rel=1e-9)


def test_renormalises_embeddings():
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(2, 2, 16, 8, generator=gen)
    scores = torch.rand(2, 2, 16, generator=gen)
    loss = DenseContrastiveLoss(3)
    assert torch.allclose(loss(emb, scores), loss(emb * 7.0, scores), atol=1e-6)


def test_gradients_reach_student_not_teacher():
    torch.manual_seed(0)
    teacher_w = torch.randn(8, 1, requires_grad=True)  # stands in for the teacher
    student_w = torch.randn(8, 6, requires_grad=True)
    x = torch.randn(2, 3, 16, 8)
    scores = (x @ teacher_w).squeeze(-1).softmax(-1)  # in the graph of teacher_w
    emb = F.normalize(x @ student_w, dim=-1)
    loss = DenseContrastiveLoss(k=4)(emb, scores)
    loss.backward()
    assert teacher_w.grad is None
    assert student_w.grad is not None and student_w.grad.abs().sum() > 0


def test_gradient_flows_to_positives_and_negatives_only():
    torch.manual_seed(1)
    emb = torch.randn(2, 1, 10, 4, requires_grad=True)
    scores = torch.arange(10.0).expand(2, 1, 10).clone()  # high: 9, 8; low: 0, 1
    DenseContrastiveLoss(k=2)(emb, scores).backward()
    used = emb.grad.abs().sum(-1)[:, 0] > 0  # [G, N]
    expected = torch.zeros(10, dtype=torch.bool)
    expected[[0, 1, 8, 9]] = True
    assert torch.equal(used, expected.expand(2, 10))


def test_ties_give_disjoint_sets():
    loss = DenseContrastiveLoss(k=4)
    high, low = loss.select(torch.zeros(2, 3, 8))
    for h, lo in zip(high.reshape(-1, 4).tolist(), low.reshape(-1, 4).tolist(), strict=True):
        assert not set(h) & set(lo)


def test_loss_falls_when_positives_are_pulled_together():
    gen = torch.Generator().manual_seed(3)
    emb = torch.randn(2, 4, 16, 8, generator=gen, requires_grad=True)
    scores = torch.rand(2, 4, 16, generator=gen)
    loss_fn = DenseContrastiveLoss(k=3, temperature=0.2)
    opt = torch.optim.SGD([emb], lr=2.0)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn(emb, scores)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:], strict=False))
    # Aligned positives and opposite negatives beat random embeddings.
    high, low = loss_fn.select(scores)
    is_high = torch.zeros(2, 4, 16, dtype=torch.bool).scatter_(2, high, True)[..., None]
    is_low = torch.zeros(2, 4, 16, dtype=torch.bool).scatter_(2, low, True)[..., None]
    e0 = F.one_hot(torch.tensor(0), 8).float()
    noise = torch.randn(2, 4, 16, 8, generator=gen)
    aligned = torch.where(is_high, e0, torch.where(is_low, -e0, noise))
    assert loss_fn(aligned, scores) < 0.1 < loss_fn(noise, scores)


def test_bounds_and_shapes():
    with pytest.raises(ConfigError):
        DenseContrastiveLoss(0)
    with pytest.raises(ConfigError):
        DenseContrastiveLoss(2, temperature=0.0)
    emb, scores = torch.randn(2, 1, 9, 4), torch.rand(2, 1, 9)
    with pytest.raises(ConfigError, match="at most 4"):
        DenseContrastiveLoss(5)(emb, scores)
    assert torch.isfinite(DenseContrastiveLoss(4)(emb, scores))  # k = N // 2 is allowed
    with pytest.raises(ConfigError, match="2 global crops"):
        DenseContrastiveLoss(2)(emb[:1], scores[:1])
    with pytest.raises(ValueError, match="scores"):
        DenseContrastiveLoss(2)(emb, scores[:, :, :8])


def test_stable_at_low_temperature():
    gen = torch.Generator().manual_seed(4)
    emb = torch.randn(2, 2, 16, 8, generator=gen, requires_grad=True)
    loss = DenseContrastiveLoss(4, temperature=1e-3)(emb, torch.rand(2, 2, 16, generator=gen))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all()


def test_pretrain_logs_contrastive_term(tmp_path):
    from mimkit.ibot.pretrain import run_pretraining

    tiny_config = _train_conftest().tiny_config
    cfg = tiny_config(tmp_path / "run", **{"loss.lambda3": 0.5, "run.max_steps": 2})
    run_pretraining(cfg)
    steps = read_log(tmp_path / "run", "step")
    assert steps, "no step records"
    assert all("contrastive" in r for r in steps)
    assert all(math.isfinite(r["contrastive"]) and r["contrastive"] > 0 for r in steps)
