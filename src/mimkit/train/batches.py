"""Whole batches built in the loader workers, each knowing the training step it is for.

The loader asks for :class:`BatchKey` s (a step and its image indices) instead of single
indices, so a worker can do per-batch work that depends on the step, seeded by it alone: the
masks that need no teacher (:class:`mimkit.masking.MaskPlan`) arrive with the crops, and a
resumed run, or one with another number of workers, draws exactly the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset, Sampler, default_collate

from mimkit.train.sampling import BatchSeededViews, EpochSampler, SeededViews

# Per-batch work for the workers: (step, batch size) -> anything a loader can pin and move.
BatchExtras = Callable[[int, int], Any]


@dataclass(frozen=True)
class BatchKey:
    step: int
    indices: tuple[int, ...]


class StepBatches(Sampler[BatchKey]):
    """The batches of ``sampler``'s epoch (from its start batch on), each with its step."""

    def __init__(self, sampler: EpochSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[BatchKey]:
        s, b = self.sampler, self.sampler.batch_size
        indices = list(s)
        first = s.epoch * s.batches_per_epoch + s.start_batch
        for i in range(len(indices) // b):
            yield BatchKey(first + i, tuple(indices[i * b : (i + 1) * b]))

    def __len__(self) -> int:
        return len(self.sampler) // self.sampler.batch_size


class BatchViews(Dataset):
    """``views[key]`` for a :class:`BatchKey`: ``(crops, labels, extras(step, B))``, the crops
    collated as a loader would (a list of ``[B, C, H, W]``, global crops first), made image by
    image or, from :class:`BatchSeededViews`, for the whole batch at once."""

    def __init__(
        self, views: SeededViews | BatchSeededViews, extras: BatchExtras | None = None
    ) -> None:
        self.views = views
        self.extras = extras

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, key: BatchKey) -> tuple[Any, Any, Any]:
        if isinstance(self.views, BatchSeededViews):
            crops, labels = self.views.batch(key.step, key.indices)
        else:
            crops, labels = default_collate([self.views[i] for i in key.indices])
        extras = None if self.extras is None else self.extras(key.step, len(key.indices))
        return crops, labels, extras
