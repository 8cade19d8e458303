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
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class ReadoutRequest:
    """Which attention a forward pass should report. Layer indices are non-negative."""

    cls_layers: frozenset[int] = frozenset()
    rollout_ranges: frozenset[tuple[int, int]] = frozenset()  # inclusive (first, last)

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
    """Attention reported by a forward pass, on patches only (prefix tokens dropped).

    ``cls_attn[l]``: block l's CLS-to-patch attention, ``[B, H, N]``.
    ``rollout[(i, j)]``: the CLS row of ``M_j @ ... @ M_i`` over that inclusive range of
    blocks (see :func:`rollout_matrix`), patch columns, ``[B, N]``.
    ``patch_scores[kind]``: a learned per-patch score ``[B, N]`` computed from the pass's
    patch tokens by a head (``models/score_heads.py``), e.g. ``pred`` or ``adv``.
    """

    cls_attn: dict[int, Tensor] = field(default_factory=dict)
    rollout: dict[tuple[int, int], Tensor] = field(default_factory=dict)
    patch_scores: dict[str, Tensor] = field(default_factory=dict)

    def rows(self, rows: slice) -> Readout:
        """The same read-outs for a slice of the batch (e.g. one crop's images)."""
        return Readout(
            cls_attn={k: v[rows] for k, v in self.cls_attn.items()},
            rollout={k: v[rows] for k, v in self.rollout.items()},
            patch_scores={k: v[rows] for k, v in self.patch_scores.items()},
        )


class ReadoutRecorder:
    """Fills a :class:`Readout` block by block during a forward pass of a backbone whose
    first ``prefix`` tokens are not patches (token 0 being the CLS token)."""

    def __init__(self, request: ReadoutRequest | None, prefix: int = 1) -> None:
        self.request = request or ReadoutRequest()
        self.prefix = prefix
        self.full_layers = self.request.full_attention_layers()
        self.readout = Readout()
        self._running: dict[tuple[int, int], Tensor] = {}

    def wants(self, block: int) -> tuple[bool, bool]:
        """(CLS row, full head-mean map) wanted of block ``block``."""
        return block in self.request.cls_layers, block in self.full_layers

    def record(self, block: int, cls_row: Tensor | None, head_mean: Tensor | None) -> None:
        """``cls_row``: ``[B, H, T]`` (all keys); ``head_mean``: ``[B, T, T]``."""
        if cls_row is not None:
            self.readout.cls_attn[block] = cls_row[..., self.prefix :]
        if head_mean is None:
            return
        for first, last in self.request.rollout_ranges:
            if first <= block <= last:
                key = (first, last)
                running = rollout_accumulate(self._running.get(key), head_mean)
                if block == last:  # only the CLS row of a finished product is kept
                    self.readout.rollout[key] = running[:, 0, self.prefix :]
                    self._running.pop(key, None)
                else:
                    self._running[key] = running


def attention_with_readout(
    q: Tensor, k: Tensor, v: Tensor, scale: float, want_cls: bool, want_full: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Softmax attention ``[B, H, T, hd]`` and what a read-out asks of it.

    Returns ``(output, CLS row [B, H, T] or None, head-mean map [B, T, T] or None)``. Without
    a read-out this is PyTorch's fused attention, whose scale is ``hd ** -0.5`` as ``scale``
    must be. A full map is paid for anyway when wanted, so the output reuses it; a CLS row
    alone costs one query, about 1/T of the attention.
    """
    cls_row = full = None
    if want_full:
        attn = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = attn @ v
        full = attn.mean(dim=1)
        if want_cls:
            cls_row = attn[:, :, 0]
    else:
        out = F.scaled_dot_product_attention(q, k, v)
        if want_cls:
            cls_row = ((q[:, :, :1] * scale) @ k.transpose(-2, -1)).softmax(dim=-1)[:, :, 0]
    return out, cls_row, full


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
