"""One epoch's running figures: the means of the step values, and how well the method's
clusters of the first crop agree with the labels (NMI, ARI). Saved with a checkpoint taken
mid-epoch, so that a resumed epoch's means cover all its steps."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mimkit.train.metrics import ari, nmi


class EpochStats:
    def __init__(self) -> None:
        self.count = 0
        self._sums: dict[str, float] = {}
        self._assigns: list[Tensor] = []
        self._labels: list[Tensor] = []

    def add(self, values: dict[str, float], assign: Tensor | None, label: Tensor) -> None:
        """One step's values and, when the method gives them, its per-image clusters."""
        self.count += 1
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        if assign is not None:
            self._assigns.append(assign.cpu())
            self._labels.append(label)

    def state_dict(self) -> dict[str, Any]:
        """Plain values and tensors, for a checkpoint taken mid-epoch."""
        assigns = torch.cat(self._assigns) if self._assigns else torch.zeros(0, dtype=torch.long)
        labels = torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.long)
        return {"count": self.count, "sums": dict(self._sums), "assigns": assigns,
                "labels": labels}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochStats:
        stats = cls()
        stats.count, stats._sums = int(state["count"]), dict(state["sums"])
        if len(state["assigns"]):
            stats._assigns, stats._labels = [state["assigns"].cpu()], [state["labels"].cpu()]
        return stats

    def means(self) -> dict[str, float]:
        """The mean of every value over the steps added, and ``nmi`` / ``ari`` if any."""
        out = {k: v / self.count for k, v in self._sums.items()}
        if self._assigns:
            y, c = torch.cat(self._labels).numpy(), torch.cat(self._assigns).numpy()
            out["nmi"], out["ari"] = nmi(y, c), ari(y, c)
        return out
