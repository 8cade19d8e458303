"""iBOT's training data: multi-crop views of the training set (image by image with PIL, or
whole batches with tensor operations), in the engine's resumable order."""

from __future__ import annotations

from mimkit.data import (
    Augmentations,
    BatchMultiCrop,
    MultiCropTransform,
    augment_whole_batches,
    build_dataset,
    check_images,
    default_normalization,
)
from mimkit.data.transforms import MultiCropSpec
from mimkit.errors import ConfigError
from mimkit.ibot.config import PretrainConfig
from mimkit.train.data import TrainData
from mimkit.train.distributed import DistInfo
from mimkit.train.sampling import BatchSeededViews, EpochSampler, SeededViews


def multicrop_transform(cfg: PretrainConfig, batched: bool = False) -> MultiCropSpec:
    """The config's multi-crop augmentation: per image (:class:`MultiCropTransform`) or, with
    ``batched``, for whole batches of uint8 pixels (:class:`BatchMultiCrop`)."""
    d = cfg.data
    mean, std = default_normalization(d.dataset)
    return (BatchMultiCrop if batched else MultiCropTransform)(
        global_size=cfg.model.img_size,
        local_size=d.local_crop_size,
        num_global=d.global_crops,
        num_local=d.local_crops,
        global_scale=tuple(d.global_scale),
        local_scale=tuple(d.local_scale),
        mean=mean,
        std=std,
        augment=Augmentations(
            flip_prob=d.flip_prob,
            jitter_prob=d.jitter_prob,
            jitter_strength=d.jitter_strength,
            grayscale_prob=d.grayscale_prob,
            blur_prob=tuple(d.blur_prob),
            solarize_prob=d.solarize_prob,
            blur_sigma_scaled=d.blur_sigma_scaled,
        ),
    )


def build_train_data(cfg: PretrainConfig, dist: DistInfo) -> TrainData:
    d = cfg.data
    batched, why = augment_whole_batches(d.batch_augment, d.dataset)
    dataset = build_dataset(d.dataset, "train", None, subset=d.subset, on_bad_image=d.on_bad_image)
    check_images(dataset)  # unreadable files fail (or warn) before training starts
    views: SeededViews | BatchSeededViews
    if batched:
        transform = multicrop_transform(cfg, batched=True)
        views = BatchSeededViews(dataset, transform, cfg.run.seed, dist.rank)  # type: ignore[arg-type]
    else:
        views = SeededViews(dataset, multicrop_transform(cfg), cfg.run.seed)
    try:
        sampler = EpochSampler(
            len(views), cfg.optim.batch_size, cfg.run.seed, dist.rank, dist.world_size
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return TrainData(dataset, views, sampler, cfg.optim.batch_size, d.num_workers, augmentation=why)
