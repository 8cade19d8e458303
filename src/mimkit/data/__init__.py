"""Data sets, augmentations and the ``build_dataset`` entry point (docs/method.md, sections
"Pretraining" and "Data")."""

from mimkit.data.array_datasets import (
    FASHION_MNIST_CLASSES,
    CifarDataset,
    EmbeddedFashionMNIST,
    IdxDataset,
    Stl10Dataset,
)
from mimkit.data.batch_finetune import BatchFinetuneTransform
from mimkit.data.batch_transforms import BatchMultiCrop
from mimkit.data.build import (
    augment_whole_batches,
    build_dataset,
    dataset_fingerprint,
    dataset_labels,
    default_normalization,
    describe_data_spec,
    holds_one_size_array,
    image_folder_split,
    num_classes,
    parse_data_spec,
    require_classes,
    validate_data_spec,
)
from mimkit.data.idx import read_idx, write_idx
from mimkit.data.image_folder import ImageFolderDataset, collate_readable, leave_out_unreadable
from mimkit.data.subsets import per_class_subset
from mimkit.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augmentations,
    MultiCropTransform,
    eval_transform,
    finetune_transform,
    train_eval_transform,
)


def check_images(dataset, n: int | None = None) -> int:
    """Check every image file (or the first ``n``) of an ImageFolder data set up front (see
    :meth:`ImageFolderDataset.check_images`); other data sets hold decoded arrays: returns 0."""
    if isinstance(dataset, ImageFolderDataset):
        return dataset.check_images(n)
    return 0


__all__ = [
    "augment_whole_batches",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Augmentations",
    "BatchFinetuneTransform",
    "BatchMultiCrop",
    "CifarDataset",
    "EmbeddedFashionMNIST",
    "IdxDataset",
    "ImageFolderDataset",
    "MultiCropTransform",
    "Stl10Dataset",
    "build_dataset",
    "check_images",
    "collate_readable",
    "dataset_fingerprint",
    "dataset_labels",
    "default_normalization",
    "eval_transform",
    "finetune_transform",
    "holds_one_size_array",
    "image_folder_split",
    "leave_out_unreadable",
    "num_classes",
    "describe_data_spec",
    "parse_data_spec",
    "per_class_subset",
    "read_idx",
    "require_classes",
    "train_eval_transform",
    "validate_data_spec",
    "write_idx",
]
