"""Deterministic data order and augmentation, so a resumed run replays exactly.

The order of an epoch is a pure function of (seed, epoch), split across ranks like
``DistributedSampler``; each sample's random crops are a pure function of (seed, epoch,
index), whatever the number of loader workers. A run resumed mid-epoch skips the batches
it already took and sees the very same views afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

_MIX = 1_000_003
VIEW_STREAM = 2  # mixed into the step seed: the stream of batch-augmented views


def mix_seed(*parts: int, start: int = 0) -> int:
    """A seed from integers; ``mix_seed(*b, start=mix_seed(*a)) == mix_seed(*a, *b)``."""
    value = start
    for p in parts:
        value = (value * _MIX + int(p) + 1) % (2**63 - 1)
    return value


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of everything random in step ``step`` of process ``rank``, wherever it is
    drawn (the training process or a loader worker)."""
    return mix_seed(seed, step, rank)


class EpochSampler(Sampler[int]):
    def __init__(
        self, length: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.length = length
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        # Each rank takes the same number of full batches; leftovers are dropped.
        self.batches_per_epoch = length // (batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{length} images cannot fill one batch of {batch_size} on {world_size} process(es)"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.length, generator=g)
        per_rank = self.batches_per_epoch * self.batch_size
        mine = order[self.rank : per_rank * self.world_size : self.world_size]
        return iter(mine[self.start_batch * self.batch_size :].tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


class SeededViews(Dataset):
    """Applies a random transform with a per-(epoch, index) seed."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any], seed: int) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index]
        # The transforms draw from torch's global RNG; fork it so that, with no loader workers,
        # the training process's own draws (drop path) do not follow the last image's seed.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, self.epoch, index))
            return self.transform(image), label


class PixelArray(Protocol):
    """A data set that hands out whole batches of pixels (see ``_ArrayDataset``)."""

    def __len__(self) -> int: ...
    def pixels(self, items: Sequence[int]) -> np.ndarray: ...
    def labels_of(self, items: Sequence[int]) -> np.ndarray: ...


class BatchSeededViews:
    """Views of whole batches made at once (``data.batch_augment``), the draws seeded by the
    step and rank alone: a resumed run, or one with another number of loader workers, sees
    the very same crops."""

    def __init__(
        self,
        dataset: PixelArray,
        transform: Callable[[Tensor, torch.Generator], Tensor | list[Tensor]],
        seed: int,
        rank: int = 0,
    ) -> None:
        self.dataset, self.transform, self.seed, self.rank = dataset, transform, seed, rank

    def set_epoch(self, epoch: int) -> None:
        """(The step already names the epoch.)"""

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, step: int, items: Sequence[int]) -> tuple[Tensor | list[Tensor], Tensor]:
        g = torch.Generator().manual_seed(
            mix_seed(VIEW_STREAM, start=step_seed(self.seed, step, self.rank))
        )
        crops = self.transform(torch.from_numpy(self.dataset.pixels(items)), g)
        return crops, torch.from_numpy(self.dataset.labels_of(items))
