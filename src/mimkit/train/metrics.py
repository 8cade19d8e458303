"""Clustering agreement between the teacher's prototype assignments and the labels."""

from __future__ import annotations

import numpy as np


def _contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), dtype=np.int64)
    np.add.at(table, (ai, bi), 1)
    return table


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Normalised mutual information with the arithmetic-mean normaliser."""
    table = _contingency(labels, clusters).astype(np.float64)
    n = table.sum()
    pij = table / n
    pi, pj = pij.sum(1, keepdims=True), pij.sum(0, keepdims=True)
    nz = pij > 0
    mi = float((pij[nz] * np.log(pij[nz] / (pi @ pj)[nz])).sum())
    h = 0.5 * (_entropy(table.sum(1)) + _entropy(table.sum(0)))
    return mi / h if h > 0 else 1.0


def ari(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Adjusted Rand index."""
    table = _contingency(labels, clusters)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    n = table.sum()
    index = pairs(table)
    rows, cols = pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / (n * (n - 1) / 2) if n > 1 else 0.0
    maximum = 0.5 * (rows + cols)
    return (index - expected) / (maximum - expected) if maximum != expected else 1.0
