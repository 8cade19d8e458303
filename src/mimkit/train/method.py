"""What the training engine asks of a training method and of an epoch-end hook.

The engine (``train/loop.py``) owns the device, AMP, the optimiser and its LR/WD schedule,
logging, checkpoints (with roll-back), the output folder's lock and signals. A method owns
its networks, its parameter groups, what one step computes, its own schedules beyond LR/WD
and what must match for a run to resume. iBOT pretraining (``mimkit.ibot``) and fine-tuning
(``mimkit.finetune``) are two methods on the same engine; neither reaches into it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor, nn


class Batch(NamedTuple):
    """One step's batch from the loader: ``crops`` (a list of ``[B, ...]`` views, global
    crops first, or one ``[B, C, H, W]`` tensor for single-view methods), the labels and
    what the loader workers computed for the method (:meth:`Method.batch_extras`)."""

    crops: Any
    labels: Tensor
    extras: Any = None


@dataclass
class StepOutput:
    """What one forward of a method gives the loop."""

    loss: Tensor  # the scalar to back-propagate
    stats: dict[str, Tensor] = field(default_factory=dict)  # detached 0-d, read in one sync
    scalars: dict[str, float] = field(default_factory=dict)  # already on the host
    assign: Tensor | None = None  # per-image cluster of the first crop, [B], for NMI/ARI


class LrSchedule(Protocol):
    """The learning rate and weight decay of every step, and the run's length."""

    steps_per_epoch: int

    @property
    def total_steps(self) -> int: ...

    def learning_rate(self, step: int) -> float: ...

    def wd(self, step: int) -> float: ...


class Method(Protocol):
    name: str  # what the start-up and end lines call it ("pretrain", "finetune")
    progress_keys: tuple[str, ...]  # epoch values worth printing at the end of an epoch

    def trainable(self) -> nn.Module:
        """The module whose parameters the optimiser updates (gradient clipping sees them)."""

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups over :meth:`trainable`'s parameters: each with ``params``,
        ``apply_wd`` (whether the schedule's weight decay applies) and ``lr_scale`` (its
        share of the schedule's learning rate: layer-wise decay)."""

    def eval_backbone(self) -> nn.Module:
        """The backbone that evaluation measures (online k-NN)."""

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Wrap the part that runs forward/backward for data parallelism (DDP)."""

    def train(self, mode: bool = True) -> Any: ...

    def checkpoint_state(self) -> dict[str, Any]:
        """The method's tensors and values to save (the engine adds the optimiser's)."""

    def load_checkpoint_state(self, state: dict[str, Any]) -> None: ...

    def identity(self) -> dict[str, Any]:
        """The settings saved as the checkpoint's ``config``, read back on resume."""

    def check_resumable(self, state: dict[str, Any], path: Path) -> None:
        """CheckpointError naming the first setting of ``state`` (a checkpoint at ``path``)
        that this run may not change and does."""

    def batch_extras(self) -> Callable[[int, int], Any] | None:
        """Per-batch work for the data-loader workers, ``(step, batch size) -> value``,
        picklable and seeded by the step alone; its value arrives as ``Batch.extras``."""

    def train_step(self, batch: Batch, step: int, seed: int) -> StepOutput:
        """Forward of one batch; ``seed`` seeds the method's own random streams;
        ``batch.extras`` is :meth:`batch_extras`'s value, or ``None`` (then compute it)."""

    def before_optimizer_step(self, step: int) -> None:
        """After backward, before clipping and the update (e.g. drop frozen gradients)."""

    def after_optimizer_step(self, step: int) -> None:
        """After the update (e.g. the EMA teacher)."""

    def end_epoch(self, epoch: int, step: int, record: dict[str, float]) -> None:
        """After epoch ``epoch`` (1-based) is saved and its hooks ran; ``record``: its means
        and hook values (e.g. fine-tuning writes its results file)."""


class EpochHook(Protocol):
    """Something measured at the end of some epochs, logged as ``{name}_{key}``. It gets the
    method: the evaluation backbone (:meth:`Method.eval_backbone`) for most hooks, the
    method's own parts for those that measure the method itself."""

    name: str
    all_ranks: bool  # True: every process runs it (it shards the work); False: rank 0 only

    def due(self, epoch: int) -> bool:
        """Whether to run after (1-based) epoch ``epoch``."""

    def __call__(self, method: Method, device: torch.device) -> dict[str, float]: ...
