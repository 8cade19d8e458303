import torch
from torch.utils.data import TensorDataset

from mimkit.evaluate import (
    cached_features,
    extract_features,
    features_from_images,
    online_knn,
    train_linear,
)
from mimkit.evaluate.linear import LinearClassifier
from mimkit.models import build_vit


class CountingViT(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.vit = build_vit("vit_nano", 16, 4)
        self.depth = self.vit.depth
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.vit(x)

    def last_blocks(self, x, n=1):
        self.calls += 1
        return self.vit.last_blocks(x, n)


def _images(n=24, classes=3):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % classes)


def test_feature_modes_shapes():
    vit = build_vit("vit_nano", 16, 4).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(features_from_images(vit, x, "cls"), vit(x).pooled)
        assert features_from_images(vit, x, "cls+avgpool").shape == (2, 128)
        last = features_from_images(vit, x, "last4")  # depth 3: all 3 blocks
        assert last.shape == (2, 192)
        assert torch.allclose(last[:, -64:], vit(x).pooled, atol=1e-6)
        assert features_from_images(vit, x, "last4+avgpool").shape == (2, 256)


def test_extract_restores_training_mode_and_batches():
    m = CountingViT().train()
    f, y = extract_features(m, _images(), "cpu", batch_size=10, progress=False)
    assert f.shape == (24, 64) and y.tolist() == (torch.arange(24) % 3).tolist()
    assert m.calls == 3 and m.training


def test_cache_hit_skips_backbone(tmp_path):
    m = CountingViT()
    ds = _images()
    key = {"checkpoint": "x|1|2", "data": "abc", "img_size": 16}
    f1, y1, hit1 = cached_features(
        m, ds, "cpu", cache_dir=tmp_path, key_parts=key, batch_size=8, progress=False
    )
    calls = m.calls
    f2, y2, hit2 = cached_features(
        m, ds, "cpu", cache_dir=tmp_path, key_parts=key, batch_size=8, progress=False
    )
    assert (hit1, hit2) == (False, True) and m.calls == calls == 3
    assert torch.equal(f1, f2) and torch.equal(y1, y2)
    # Another mode or another key re-extracts.
    cached_features(
        m, ds, "cpu", cache_dir=tmp_path, key_parts=key, mode="cls+avgpool", progress=False
    )
    assert m.calls > calls
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_linear_probe_separable():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 4, generator=g)
    x = torch.randn(2000, 16, generator=g)
    y = (x @ w).argmax(1)
    res = train_linear(
        x[:1600], y[:1600], x[1600:], y[1600:], epochs=30, batch_size=64, lr=0.5, progress=False
    )
    assert res.final["val_top1"] > 95
    assert res.best["val_top1"] >= res.final["val_top1"]
    assert len(res.history) == 30 and "val_top5" not in res.final
    d = res.as_dict()
    assert set(d) >= {"final", "best_optimistic", "history", "lr"}


def test_linear_head_init():
    h = LinearClassifier(384, 1000)
    assert torch.count_nonzero(h.linear.bias) == 0
    assert abs(h.linear.weight.std().item() - 0.01) < 1e-3


def test_online_knn_runs():
    m = CountingViT()
    res = online_knn(m, _images(30), _images(12), "cpu", k=5, batch_size=16)
    assert res["k"] == 5 and 0 <= res["top1"] <= 100
