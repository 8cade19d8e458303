"""Batches of a training set in a resumable order, as the engine takes them: views made image
by image or for whole batches, each batch with its step and the method's per-batch extras."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from torch.utils.data import DataLoader, Dataset

from mimkit.devices import loader_workers
from mimkit.errors import DataError
from mimkit.train.batches import BatchExtras, BatchViews, StepBatches
from mimkit.train.sampling import BatchSeededViews, EpochSampler, SeededViews

T = TypeVar("T")


def stop_on_data_error(
    batches: Iterable[T], first_step: int, before_stop: Callable[[int], str]
) -> Iterator[T]:
    """``batches``, but an image that cannot be read mid-run (``on_bad_image=error``; the
    up-front check reads headers only) stops the run with a one-line DataError, after
    ``before_stop(step)`` (e.g. a save), whose text ends the message. Each batch is trained
    on before the next is asked for: the step is ``first_step`` + the batches yielded."""
    it, step = iter(batches), first_step
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except DataError as err:
            # From a loader worker the message carries the worker's traceback: keep the
            # error's own last line.
            msg = str(err).strip().splitlines()[-1].removeprefix("mimkit.errors.DataError: ")
            raise DataError(msg + before_stop(step)) from None
        yield batch
        step += 1


@dataclass
class TrainData:
    dataset: Dataset
    views: SeededViews | BatchSeededViews
    sampler: EpochSampler
    batch_size: int
    num_workers: int
    extras: BatchExtras | None = None  # the method's per-batch work, done in the workers
    augmentation: str = ""  # how the views are made, in words (see augment_whole_batches)

    def __post_init__(self) -> None:
        self.num_workers = loader_workers(self.num_workers)

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch

    def loader(self, epoch: int, start_batch: int, pin_memory: bool) -> DataLoader:
        """Epoch ``epoch``'s batches from ``start_batch`` on (the same ones after a resume):
        ``(crops, labels, extras)``, whole batches built by the workers (see
        :mod:`mimkit.train.batches`)."""
        self.sampler.set_epoch(epoch, start_batch)
        self.views.set_epoch(epoch)
        return DataLoader(
            BatchViews(self.views, self.extras),
            batch_size=None,  # the keys are whole batches already
            sampler=StepBatches(self.sampler),
            num_workers=self.num_workers,
            pin_memory=pin_memory,
        )

