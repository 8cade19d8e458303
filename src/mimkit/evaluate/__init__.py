"""Evaluation of a frozen backbone: features, weighted k-NN, few-shot k-NN, linear probe."""

from mimkit.evaluate.features import (
    FEATURE_MODES,
    cached_features,
    extract_features,
    features_from_images,
    file_identity,
)
from mimkit.evaluate.knn import fewshot_knn, knn_classify, knn_evaluate
from mimkit.evaluate.linear import (
    LinearClassifier,
    LinearResult,
    scaled_lr,
    train_linear,
    train_linear_augmented,
)
from mimkit.evaluate.online import online_knn

__all__ = [
    "FEATURE_MODES",
    "LinearClassifier",
    "LinearResult",
    "cached_features",
    "extract_features",
    "features_from_images",
    "fewshot_knn",
    "file_identity",
    "knn_classify",
    "knn_evaluate",
    "online_knn",
    "scaled_lr",
    "train_linear",
    "train_linear_augmented",
]
