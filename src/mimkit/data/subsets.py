"""Deterministic per-class subsets of a data set (``data.subset``: a fraction or a count per
class), shared by every data kind."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np

from mimkit.errors import ConfigError

Subset = float | int | None


def check_subset(subset: Subset) -> Subset:
    """Validate a ``subset`` value: None, a fraction in (0, 1], or a count >= 1 per class."""
    if subset is None:
        return None
    if isinstance(subset, bool) or not isinstance(subset, Real):
        raise ConfigError(f"subset {subset!r} must be a fraction in (0, 1] or a count >= 1")
    if isinstance(subset, Integral):
        if subset < 1:
            raise ConfigError(f"subset {subset} must be a count >= 1 (or a fraction in (0, 1])")
        return int(subset)
    subset = float(subset)
    if 0.0 < subset <= 1.0:
        return subset
    if subset > 1.0 and subset.is_integer():
        return int(subset)
    raise ConfigError(f"subset {subset} must be a fraction in (0, 1] or a whole count >= 1")


def per_class_subset(labels: Sequence[int] | np.ndarray, subset: Subset) -> np.ndarray:
    """Indices (ascending) of a deterministic per-class subset of ``labels``.

    ``subset=0.2`` keeps the first 20% (floor, at least 1) of each class, ``subset=50`` (an int)
    keeps the first 50 of each class, ``None`` keeps everything. "First" is index order, i.e.
    sorted file order for folders and file order for array data sets.
    """
    labels = np.asarray(labels, dtype=np.int64)
    subset = check_subset(subset)
    if subset is None:
        return np.arange(len(labels))
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, math.floor(len(idx) * subset)) if isinstance(subset, float) else subset
        keep[idx[:k]] = True
    return np.flatnonzero(keep)
