"""What a k-NN figure means: the same k-NN on raw pixels and on the same ViT with random weights.

A pretrained model's k-NN accuracy says little on its own: on Fashion-MNIST raw pixels reach
83 %, and a ViT with random weights already 65 %. :func:`reference_knn` computes both on the
very split and protocol of the figure they stand next to, and caches them in a small JSON
file so that a rerun does not pay for them twice.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from mimkit.data import collate_readable
from mimkit.errors import MimkitWarning, OutputError
from mimkit.evaluate.features import extract_features
from mimkit.evaluate.knn import knn_evaluate
from mimkit.runs.paths import write_atomic


def pixel_features(dataset: Dataset, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """The transformed images themselves, flattened: ``[N, C*H*W]`` and labels ``[N]``."""
    xs, ys = [], []
    for x, y in filter(None, DataLoader(dataset, batch_size, collate_fn=collate_readable)):
        xs.append(x.flatten(1))
        ys.append(torch.as_tensor(y))
    return torch.cat(xs), torch.cat(ys)


def reference_knn(
    random_backbone: Callable[[], nn.Module],
    train: Dataset,
    val: Dataset,
    device: torch.device | str,
    *,
    k: int = 20,
    temperature: float = 0.07,
    cache: Path | None = None,
    key: dict[str, Any] | None = None,
) -> dict[str, float]:
    """k-NN top-1 (%) of raw pixels and of ``random_backbone()``'s CLS token.

    ``cache``: a JSON file holding an earlier result; it is reused when it was computed for
    the same ``key`` (describe the data, model and seed in it) and rewritten otherwise.
    """
    ident = {"k": k, "temperature": temperature, **(key or {})}
    if cache is not None and cache.is_file():
        try:
            saved = json.loads(cache.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("key") == ident:
            return {name: float(v) for name, v in saved["top1"].items()}
    result = {}
    x_tr, y_tr = pixel_features(train)
    x_va, y_va = pixel_features(val)
    result["raw_pixels"] = knn_evaluate(x_tr, y_tr, x_va, y_va, (k,), temperature)[k]["top1"]
    model = random_backbone().to(device)
    f_tr, l_tr = extract_features(model, train, device, progress=False)
    f_va, l_va = extract_features(model, val, device, progress=False)
    result["random_weights"] = knn_evaluate(f_tr, l_tr, f_va, l_va, (k,), temperature)[k]["top1"]
    if cache is not None:
        try:
            write_atomic(cache, json.dumps({"key": ident, "top1": result}, indent=2).encode())
        except OutputError as err:  # only the cache is lost
            warnings.warn(f"reference k-NN not cached ({err})", MimkitWarning, stacklevel=2)
    return result
