"""Small heads that give every patch token one score: HPM's loss predictor (``pred``) and the
adversarial mask policy (``adv``), next to the iBOT projection head (``head.py``).

Both live in the student and the teacher networks under ``score_heads.KIND``, so they are
optimised, EMA-averaged, saved and resumed with the rest. The teacher's ``pred`` is the EMA
predictor that scores the teacher's unmasked crops; the policy runs from the student's copy
on the teacher's (detached) tokens, and its teacher copy is an unused EMA average.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor, nn

from mimkit.errors import CheckpointError


class PatchScoreHead(nn.Module):
    """LayerNorm -> Linear(D, D/4) -> GELU -> Linear(D/4, 1): ``[..., D]`` tokens to ``[...]``
    scores. ``stop_gradient``: its input's gradient stops here (the head learns, the tokens
    it reads do not learn from it)."""

    def __init__(self, dim: int, stop_gradient: bool = False) -> None:
        super().__init__()
        hidden = max(1, dim // 4)
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )
        self.stop_gradient = stop_gradient
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        if self.stop_gradient:
            tokens = tokens.detach()
        return self.net(tokens).squeeze(-1)


def build_score_heads(
    kinds: Iterable[str], dim: int, detached: Iterable[str] = ()
) -> nn.ModuleDict | None:
    """One :class:`PatchScoreHead` per learned score kind (None when there is none);
    ``detached``: the kinds whose input gradient stops."""
    stop = set(detached)
    heads = {kind: PatchScoreHead(dim, kind in stop) for kind in sorted(set(kinds))}
    return nn.ModuleDict(heads) if heads else None


# The copy of each head that scores masks in training: the teacher's EMA loss predictor, the
# student's policy (the one that learns).
SCORING_NETWORK = {"pred": "teacher", "adv": "student"}


def load_score_heads(
    state: Mapping[str, Any], kinds: Iterable[str], dim: int, source: str = "the checkpoint"
) -> dict[str, PatchScoreHead]:
    """Each of ``kinds``' heads from a mimkit pretraining checkpoint's content ``state``, the
    copy that scored the masks in training (:data:`SCORING_NETWORK`), in evaluation mode.
    CheckpointError naming the first kind ``state`` has no head for."""
    heads = {}
    for kind in kinds:
        network = state.get(SCORING_NETWORK[kind])
        prefix = f"score_heads.{kind}."
        weights = {
            k[len(prefix) :]: v
            for k, v in (network.items() if isinstance(network, Mapping) else ())
            if k.startswith(prefix)
        }
        if not weights:
            raise CheckpointError(
                f"{source} has no '{kind}' head (only a mimkit run whose masks use the "
                f"'{kind}' score trains one)"
            )
        head = PatchScoreHead(dim)
        try:
            head.load_state_dict(weights)
        except RuntimeError as err:
            message = f"{source}'s '{kind}' head does not fit this backbone: {err}"
            raise CheckpointError(message.splitlines()[0]) from None
        heads[kind] = head.eval()
    return heads
