import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from mimkit.evaluate import fewshot_knn, knn_classify, knn_evaluate


def _clusters(n_train=600, n_test=200, dim=32, classes=7, spread=0.6, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g)
    ytr = torch.randint(0, classes, (n_train,), generator=g)
    yte = torch.randint(0, classes, (n_test,), generator=g)
    xtr = centers[ytr] + spread * torch.randn(n_train, dim, generator=g)
    xte = centers[yte] + spread * torch.randn(n_test, dim, generator=g)
    return xtr, ytr, xte, yte


@pytest.mark.parametrize("k", [1, 5, 20])
def test_matches_sklearn_weighted_cosine(k):
    T = 0.07
    xtr, ytr, xte, _ = _clusters(spread=1.5)
    votes = knn_classify(xtr, ytr, xte, k, temperature=T)
    ours = votes.argmax(1).numpy()
    clf = KNeighborsClassifier(
        n_neighbors=k,
        algorithm="brute",
        metric="cosine",
        weights=lambda d: np.exp((1 - d) / T),
    ).fit(xtr.double().numpy(), ytr.numpy())
    theirs = clf.predict(xte.double().numpy())
    top2 = votes.topk(2, dim=1).values
    tie = (top2[:, 0] - top2[:, 1]).abs() <= 1e-5 * top2[:, 0]
    assert ((ours == theirs) | tie.numpy()).all()
    assert (ours == theirs).mean() > 0.95


def test_votes_are_weighted_sums():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    q = torch.tensor([[2.0, 0.0]])
    v = knn_classify(bank, labels, q, k=2, temperature=0.5, num_classes=3)
    assert v.shape == (1, 3)
    expected0 = np.exp(1.0 / 0.5)
    expected1 = np.exp((1 / np.sqrt(2)) / 0.5)
    assert torch.allclose(
        v[0], torch.tensor([expected0, expected1, 0.0], dtype=torch.float32), rtol=1e-5
    )


def test_chunked_equals_unchunked():
    xtr, ytr, xte, yte = _clusters()
    full = knn_classify(xtr, ytr, xte, 10, chunk_size=10_000)
    for chunk in (1, 7, 64):
        assert torch.allclose(knn_classify(xtr, ytr, xte, 10, chunk_size=chunk), full, atol=1e-5)
    a = knn_evaluate(xtr, ytr, xte, yte, ks=(1, 10, 50), chunk_size=13)
    b = knn_evaluate(xtr, ytr, xte, yte, ks=(1, 10, 50), chunk_size=10_000)
    assert a == b


def test_evaluate_reuses_max_k_consistently():
    xtr, ytr, xte, yte = _clusters(spread=1.2)
    res = knn_evaluate(xtr, ytr, xte, yte, ks=(5, 20, 100))
    for k in (5, 20, 100):
        pred = knn_classify(xtr, ytr, xte, k).argmax(1)
        assert res[k]["top1"] == pytest.approx(100 * (pred == yte).float().mean().item())
        assert res[k]["top5"] >= res[k]["top1"]
    few = knn_evaluate(xtr, ytr % 3, xte, yte % 3, ks=(10,))
    assert "top5" not in few[10]


def test_k_larger_than_bank_and_easy_problem():
    xtr, ytr, xte, yte = _clusters(n_train=30, spread=0.1)
    res = knn_evaluate(xtr, ytr, xte, yte, ks=(10, 200))
    assert res[10]["top1"] > 95
    assert 200 in res


def test_fewshot_shapes_and_range():
    xtr, ytr, xte, yte = _clusters(spread=0.3)
    res = fewshot_knn(xtr, ytr, xte, yte, shots=(1, 5), draws=3, k=20, seed=1)
    assert set(res) == {1, 5}
    assert res[1]["k"] == 7  # 1 shot x 7 classes
    assert res[5]["top1"] > 80
    assert res == fewshot_knn(xtr, ytr, xte, yte, shots=(1, 5), draws=3, k=20, seed=1)
