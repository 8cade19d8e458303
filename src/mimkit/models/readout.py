"""What a teacher forward pass can report about its attention, besides its tokens.

Reading attention is opt-in and priced by what is asked for: a CLS row costs one extra
``q_cls . K^T`` per layer (about 1/N of that layer's attention), and only the layers of a
rollout range materialise full attention maps, folded into one running product so that no
more than one ``[B, T, T]`` matrix is alive at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class ReadoutRequest:
    """Which attention a forward pass should report. Layer indices are non-negative."""

    cls_layers: frozenset[int] = frozenset()
    rollout_ranges: frozenset[tuple[int, int]] = frozenset()  # inclusive (first, last)

    @property
    def empty(self) -> bool:
        return not self.cls_layers and not self.rollout_ranges

    def full_attention_layers(self) -> frozenset[int]:
        return frozenset(l for a, b in self.rollout_ranges for l in range(a, b + 1))

    def merge(self, other: ReadoutRequest) -> ReadoutRequest:
        return ReadoutRequest(
            cls_layers=self.cls_layers | other.cls_layers,
            rollout_ranges=self.rollout_ranges | other.rollout_ranges,
        )

    @staticmethod
    def union(requests: Iterable[ReadoutRequest]) -> ReadoutRequest:
        out = ReadoutRequest()
        for r in requests:
            out = out.merge(r)
        return out


@dataclass
class Readout:
    """Attention reported by a forward pass.

    ``cls_attn[l]`` is layer l's CLS-to-patch attention, ``[B, H, N]`` (CLS column dropped).
    ``rollout[(i, j)]`` is ``M_j @ ... @ M_i`` over that inclusive range, ``[B, T, T]``.
    """

    cls_attn: dict[int, Tensor] = field(default_factory=dict)
    rollout: dict[tuple[int, int], Tensor] = field(default_factory=dict)


def rollout_matrix(head_mean_attn: Tensor) -> Tensor:
    """``rownorm(0.5 * A + 0.5 * I)`` for a head-averaged ``[B, T, T]`` attention map."""
    t = head_mean_attn.shape[-1]
    eye = torch.eye(t, dtype=head_mean_attn.dtype, device=head_mean_attn.device)
    m = 0.5 * head_mean_attn + 0.5 * eye
    return m / m.sum(dim=-1, keepdim=True)


def rollout_accumulate(running: Tensor | None, head_mean_attn: Tensor) -> Tensor:
    """Fold one more (later) layer into a rollout product: later layers multiply on the left."""
    m = rollout_matrix(head_mean_attn)
    return m if running is None else m @ running
