"""Scored selections with a random part, drawn ahead like every other random draw of the masks
(docs/method.md, section "Masks"): ``mix`` (HPM's rule and its curricula) and ``sample``
(Gumbel-top-k). Both plan, per image, the masked count ``k`` and uniform keys ``u [B, N]``
with no scores; after the teacher's pass they only rank. Vectorised over the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mimkit.masking.select import FLOOR_EPS, floor_count, mask_from_ranks


def first_ranks(counts: Tensor, n: int) -> Tensor:
    """``[B, N]`` bool: ranks ``0 .. counts[b] - 1`` of each row."""
    return torch.arange(n, device=counts.device) < counts[:, None]


def mix_ranks(ratio: Tensor, n: int, alpha: float) -> tuple[Tensor, Tensor]:
    """The forced ranks ``[B, N]`` and the masked counts ``k = floor(r N)`` ``[B]`` of ``mix``
    at ``alpha``: ``h = floor(|alpha| k)`` ranks forced, the best ones (rank 0 is the highest
    score) for ``alpha >= 0``, the worst ones for ``alpha < 0``."""
    k = floor_count(ratio, n)
    h = torch.floor(abs(alpha) * k.double() + FLOOR_EPS).long()
    pos = torch.arange(n, device=ratio.device)
    forced = pos < h[:, None] if alpha >= 0 else pos >= (n - h)[:, None]
    return forced, k


def mix_mask(scores: Tensor, forced_ranks: Tensor, keys: Tensor, counts: Tensor) -> Tensor:
    """``[B, N]`` bool on ``scores``' device: the patches at the forced ranks of ``scores``,
    then the rest of each row's ``counts`` by the largest ``keys`` among the other patches
    (uniform keys: a uniform draw without replacement). With nothing forced this is exactly
    ``random`` on the same keys; with every rank forced, exactly ``high``."""
    forced = mask_from_ranks(scores, forced_ranks, "high")
    keys = keys.to(scores.device, non_blocking=True)
    # Keys lie in [0, 1): 2 puts every forced patch first.
    return mask_from_ranks(torch.where(forced, 2.0, keys), first_ranks(counts, keys.shape[1]))


def gumbel(keys: Tensor) -> Tensor:
    """Standard Gumbel noise ``-log(-log u)`` from uniform ``keys`` in [0, 1)."""
    tiny = torch.finfo(keys.dtype).tiny
    return -torch.log(-torch.log(keys.clamp(tiny, 1.0 - torch.finfo(keys.dtype).eps)))


def perturbed_scores(scores: Tensor, keys: Tensor, tau: float) -> Tensor:
    """``scores / tau + Gumbel(keys)``, float32, on ``scores``' device: its top ``k`` are a draw
    of ``k`` patches without replacement with probabilities ``softmax(scores / tau)``."""
    noise = gumbel(keys.to(scores.device, non_blocking=True).float())
    return scores.float() / tau + noise


def sample_mask(scores: Tensor, ranks: Tensor, keys: Tensor, tau: float) -> Tensor:
    """``sample``: the ranks ``ranks [B, N]`` (the first ``k`` of each row) put on the patches
    ordered by :func:`perturbed_scores` (Gumbel-top-k; ``tau -> 0`` gives ``high``)."""
    return mask_from_ranks(perturbed_scores(scores, keys, tau), ranks, "high")
