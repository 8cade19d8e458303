"""The dense contrastive term (docs/method.md, section "The dense contrastive term"): the
teacher's most-attended patches of every global crop of an image are mutual positives, its
least-attended patches are the negatives.

Unlike the thesis code this term is computed on the **student's** embeddings, so it has a
gradient and shapes training (see docs/pretraining.md, section "The dense contrastive term").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mimkit.errors import ConfigError


class DenseContrastiveLoss(nn.Module):
    """InfoNCE between the top-k and bottom-k patches (by teacher score) of each image.

    ``forward(embeddings [G, B, N, D], scores [G, B, N])``: per image, the ``k`` highest-scoring
    patches of each of the ``G >= 2`` global crops form ``M = G*k`` mutual positives and the
    ``k`` lowest-scoring ones form ``M`` negatives. For anchor ``i`` and positive ``j != i``::

        l_ij = -log( exp(s_ij) / (exp(s_ij) + sum_n exp(s_in)) ),   s = z . z' / tau

    averaged over anchors, positives and images. ``embeddings`` are the student's patch
    embeddings (re-normalised here); ``scores`` only choose patches and never carry gradient.
    """

    def __init__(self, k: int, temperature: float = 0.2) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"contrastive k must be an integer >= 1, got {k!r}")
        if not (float(temperature) > 0 and math.isfinite(float(temperature))):
            raise ConfigError(f"contrastive temperature must be > 0, got {temperature!r}")
        self.k = k
        self.temperature = float(temperature)

    def extra_repr(self) -> str:
        return f"k={self.k}, temperature={self.temperature}"

    def select(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """Indices ``[G, B, k]`` of the highest and the lowest-scoring patches.

        One stable descending sort, so that the two sets are disjoint for ``k <= N // 2`` even
        when scores tie (an all-equal score row takes the first k and the last k patches).
        """
        order = torch.sort(scores.detach(), dim=-1, descending=True, stable=True).indices
        return order[..., : self.k], order[..., -self.k :]

    def forward(self, embeddings: Tensor, scores: Tensor) -> Tensor:
        if embeddings.dim() != 4:
            raise ValueError(f"embeddings must be [G, B, N, D], got {tuple(embeddings.shape)}")
        g, b, n, d = embeddings.shape
        if tuple(scores.shape) != (g, b, n):
            raise ValueError(
                f"scores must be [G, B, N] = {(g, b, n)} to match the embeddings, "
                f"got {tuple(scores.shape)}"
            )
        if g < 2:
            raise ConfigError(f"the contrastive term needs at least 2 global crops, got {g}")
        if self.k > n // 2:
            raise ConfigError(
                f"contrastive k={self.k} is too large for {n} patches (at most {n // 2})"
            )
        z = embeddings
        high, low = self.select(scores)

        def gather(idx: Tensor) -> Tensor:  # [G, B, k] -> [B, G*k, D]
            picked = z.gather(2, idx.unsqueeze(-1).expand(g, b, self.k, d))
            return picked.permute(1, 0, 2, 3).reshape(b, g * self.k, d)

        return self.pairs(gather(high), gather(low))

    def rows(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """The patches :meth:`forward` reads, as flat rows of the ``[G*B*N]`` patch tokens
        (crop-major, as the embeddings), each ``[B*G*k]`` in the order :meth:`pairs` takes
        them (image by image), for the highest- and the lowest-scoring patches. Computing the
        embeddings of these rows only and calling :meth:`pairs` gives the same loss."""
        g, b, n = scores.shape
        base = torch.arange(g * b, device=scores.device).reshape(g, b, 1) * n
        high, low = self.select(scores)
        return tuple((idx + base).permute(1, 0, 2).reshape(-1) for idx in (high, low))

    def pairs(self, pos: Tensor, neg: Tensor) -> Tensor:
        """The loss from each image's positives ``[B, M, D]`` and negatives ``[B, M, D]``."""
        b, m, d = pos.shape
        if tuple(neg.shape) != (b, m, d):
            raise ValueError(f"negatives {tuple(neg.shape)} do not match positives {(b, m, d)}")
        pos, neg = (F.normalize(_at_least_float32(x), dim=-1) for x in (pos, neg))
        s_pos = pos @ pos.transpose(1, 2) / self.temperature  # [B, M, M]
        s_neg = pos @ neg.transpose(1, 2) / self.temperature  # [B, M, M]
        neg_lse = torch.logsumexp(s_neg, dim=-1, keepdim=True)  # [B, M, 1]
        # -log(e^s / (e^s + sum_n e^sn)) = logaddexp(s, lse_n) - s, stable for any tau.
        per_pair = torch.logaddexp(s_pos, neg_lse) - s_pos
        # The mean over the off-diagonal pairs; a zero-filled diagonal, not a boolean index,
        # so that the shape never depends on values (a host sync on accelerators).
        diag = torch.eye(m, dtype=torch.bool, device=pos.device)
        return per_pair.masked_fill(diag, 0.0).sum() / (b * m * (m - 1))


def _at_least_float32(x: Tensor) -> Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
