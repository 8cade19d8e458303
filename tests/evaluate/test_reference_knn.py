"""The reference figures printed beside a k-NN result: raw pixels and random weights."""

from __future__ import annotations

import torch
from torch.utils.data import Subset

from mimkit.data import build_dataset, default_normalization, eval_transform
from mimkit.evaluate import knn_evaluate
from mimkit.evaluate.reference import pixel_features, reference_knn
from mimkit.models import build_vit


def _split():
    tf = eval_transform(16, *default_normalization("embedded"))
    train = build_dataset("embedded", "train", tf, subset=20)
    val = Subset(build_dataset("embedded", "val", tf), range(300))
    return train, val


def test_pixels_and_random_weights_match_a_direct_computation(tmp_path):
    train, val = _split()
    calls = []

    def factory():
        calls.append(1)
        torch.manual_seed(0)
        return build_vit("vit_nano", 16, 4)

    cache = tmp_path / "ref.json"
    ref = reference_knn(factory, train, val, "cpu", k=5, cache=cache, key={"seed": 0})
    x_tr, y_tr = pixel_features(train)
    x_va, y_va = pixel_features(val)
    assert x_tr.shape == (200, 3 * 16 * 16)
    direct = knn_evaluate(x_tr, y_tr, x_va, y_va, (5,))[5]["top1"]
    assert ref["raw_pixels"] == direct
    assert 30 < ref["raw_pixels"] <= 100 and 10 < ref["random_weights"] <= 100

    again = reference_knn(factory, train, val, "cpu", k=5, cache=cache, key={"seed": 0})
    assert again == ref and len(calls) == 1  # read from the cache
    reference_knn(factory, train, val, "cpu", k=5, cache=cache, key={"seed": 1})
    assert len(calls) == 2  # another key: computed again
