"""Fine-tuning data: the (low-label) train split with the recipe's augmentations and the val
split for evaluation. Array data sets are augmented a whole batch at a time with tensor
operations, seeded by (seed, step, rank); folders of image files image by image with PIL,
seeded by (seed, epoch, image): either way a resumed run sees the same views."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset, Subset

from mimkit.data import (
    BatchFinetuneTransform,
    augment_whole_batches,
    build_dataset,
    check_images,
    dataset_labels,
    default_normalization,
    eval_transform,
    finetune_transform,
    leave_out_unreadable,
    num_classes,
    require_classes,
    validate_data_spec,
)
from mimkit.errors import DataError
from mimkit.finetune.config import FinetuneConfig
from mimkit.train.sampling import BatchSeededViews, SeededViews


@dataclass
class FinetuneData:
    train: Dataset  # images without transform (labels known without decoding)
    views: SeededViews | BatchSeededViews  # train images through the augmentations
    val: Dataset  # images through the evaluation transform
    num_classes: int


def validate_data(cfg: FinetuneConfig) -> None:
    """Both splits exist (reads no image)."""
    d = cfg.data
    validate_data_spec(d.dataset, "train")
    validate_data_spec(d.val_dataset or d.dataset, "val")


def build_data(cfg: FinetuneConfig, img_size: int, rank: int = 0) -> FinetuneData:
    """The splits and the train views of process ``rank``."""
    d, a = cfg.data, cfg.augment
    mean, std = default_normalization(d.dataset)
    train = build_dataset(d.dataset, "train", subset=d.subset, on_bad_image=d.on_bad_image)
    check_images(train)  # unreadable files fail (or warn) before training starts
    require_classes(train, f"the train split of {d.dataset}")
    val = build_dataset(
        d.val_dataset or d.dataset,
        "val",
        eval_transform(img_size, mean, std),
        subset=d.val_subset,
        on_bad_image=d.on_bad_image,
    )
    # Both splits before any work: an unreadable val image stops the run now ("error"), or
    # leaves the set ("skip": a substitute would be counted twice).
    check_images(val)
    leave_out_unreadable(val)
    classes = num_classes(train)
    val_labels = dataset_labels(val)
    if not val_labels:
        raise DataError(f"the val split of {d.val_dataset or d.dataset} is empty")
    if max(val_labels) >= classes:
        raise DataError(
            f"the val split has label {max(val_labels)} but the train split only {classes} classes"
        )
    augment = dict(
        scale=tuple(a.crop_scale),
        flip_prob=a.flip_prob,
        randaug_ops=a.randaug_ops,
        randaug_magnitude=a.randaug_magnitude,
        erase_prob=a.erase_prob,
    )
    views: SeededViews | BatchSeededViews
    batched_views, _ = augment_whole_batches(d.batch_augment, d.dataset)
    if batched_views:
        batched = BatchFinetuneTransform(img_size, mean, std, **augment)
        views = BatchSeededViews(train, batched, cfg.run.seed, rank)  # type: ignore[arg-type]
    else:
        views = SeededViews(train, finetune_transform(img_size, mean, std, **augment), cfg.run.seed)
    return FinetuneData(train, views, val, classes)


def val_shard(val: Dataset, rank: int, world_size: int) -> Dataset:
    """This process's share of the val split (every ``world_size``-th image)."""
    if world_size == 1:
        return val
    return Subset(val, range(rank, len(val), world_size))
