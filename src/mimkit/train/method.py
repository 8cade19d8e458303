"""What the training loop asks of a pretraining method and of an epoch-end hook.

The loop (``train/loop.py``) owns the device, AMP, the optimiser and its schedule, logging,
checkpoints and signals; a method (``train/meta_arch.py`` for iBOT) owns its networks and
computes one step's loss. Neither reaches into the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn


@dataclass
class StepOutput:
    """What one forward of a method gives the loop."""

    loss: Tensor  # the scalar to back-propagate
    stats: dict[str, Tensor]  # detached 0-d tensors, read in one host sync with the loss
    scalars: dict[str, float]  # values already on the host (e.g. schedules)
    assign: Tensor | None = None  # per-image cluster of the first crop, [B], for NMI/ARI


class Method(Protocol):
    progress_keys: tuple[str, ...]  # stats worth printing at the end of an epoch

    def trainable(self) -> nn.Module:
        """The parameters the optimiser updates (and gradient clipping sees)."""

    def eval_backbone(self) -> nn.Module:
        """The backbone that epoch-end evaluation measures."""

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Wrap the part that runs forward/backward for data parallelism (DDP)."""

    def train(self, mode: bool = True) -> Any: ...

    def checkpoint_state(self) -> dict[str, Any]: ...

    def load_checkpoint_state(self, state: dict[str, Any]) -> None: ...

    def batch_extras(self) -> Callable[[int, int], Any] | None:
        """Per-batch work for the data-loader workers, ``(step, batch size) -> value``,
        picklable and seeded by the step alone; its value reaches :meth:`train_step`."""

    def train_step(
        self, crops: Sequence[Tensor], step: int, seed: int, extras: Any = None
    ) -> StepOutput:
        """Forward of one batch; ``seed`` seeds the method's own random streams; ``extras``
        is :meth:`batch_extras`'s value for this step, or ``None`` (then compute it)."""

    def before_optimizer_step(self, step: int) -> None:
        """Before clipping and the update (e.g. drop frozen parameters' gradients)."""

    def after_optimizer_step(self, step: int) -> None:
        """After the update (e.g. the EMA teacher)."""


class EpochHook(Protocol):
    """Something measured at the end of some epochs, logged as ``{name}_{key}``. It gets the
    method: the evaluation backbone (:meth:`Method.eval_backbone`) for most hooks, the
    method's own parts for those that measure the method itself."""

    name: str

    def due(self, epoch: int) -> bool:
        """Whether to run after (1-based) epoch ``epoch``."""

    def __call__(self, method: Method, device: torch.device) -> dict[str, float]: ...
