"""Fine-tuning data: low-label subsets per class and the training transform."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from finetune_fixtures import stripes_folder
from PIL import Image

from mimkit.cli import build_parser
from mimkit.commands.config_args import config_overrides
from mimkit.commands.finetune import FLAGS
from mimkit.data import EmbeddedFashionMNIST, dataset_labels, eval_transform, finetune_transform
from mimkit.errors import ConfigError
from mimkit.finetune import default_output_dir, load_finetune_config
from mimkit.finetune.data import build_data
from mimkit.train.sampling import BatchSeededViews, SeededViews


@pytest.mark.parametrize(("subset", "per_class"), [(0.01, 10), (0.1, 100), (3, 3)])
def test_subset_keeps_the_first_labels_of_every_class(subset, per_class):
    cfg = load_finetune_config("fashion_mnist", [("run.init", "random"), ("data.subset", subset)])
    data = build_data(cfg, img_size=16)
    labels = dataset_labels(data.train)
    assert Counter(labels) == {c: per_class for c in range(10)}
    assert data.num_classes == 10 and len(data.views) == 10 * per_class
    # The data layer's per-class rule: the first ones of each class, in file order.
    all_labels = np.asarray(EmbeddedFashionMNIST("train").targets)
    expected = np.sort(
        np.concatenate([np.flatnonzero(all_labels == c)[:per_class] for c in range(10)])
    )
    assert data.train.indices.tolist() == expected.tolist()
    assert len(data.val) == 2000  # evaluation always uses the whole val split by default


def test_subset_flag_takes_percentages_and_names_the_output_dir(tmp_path):
    init = tmp_path / "pre" / "checkpoint.pth"
    args = build_parser().parse_args(["finetune", "--init", str(init), "--subset", "1%"])
    cfg = load_finetune_config(args.config, config_overrides(args, FLAGS))
    assert cfg.data.subset == 0.01
    assert default_output_dir(cfg) == tmp_path / "pre" / "finetune_subset0.01"


def test_transform_reduces_to_resize_when_every_augmentation_is_off():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8))
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    plain = finetune_transform(
        16, mean, std, scale=(1.0, 1.0), flip_prob=0, randaug_ops=0, erase_prob=0
    )
    torch.manual_seed(0)
    out = plain(img)
    assert out.shape == (3, 16, 16)
    torch.testing.assert_close(out, eval_transform(16, mean, std)(img), atol=1e-5, rtol=0)


def test_transform_is_random_but_seeded():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8))
    tf = finetune_transform(16, erase_prob=1.0)
    views = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        views.append(tf(img))
    assert torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])


def test_array_data_is_augmented_by_whole_batches_and_folders_image_by_image(tmp_path):
    folder = stripes_folder(tmp_path / "stripes", per_class=4, val_per_class=2)
    base = [("run.init", "random"), ("data.subset", 4)]
    embedded = build_data(load_finetune_config("fashion_mnist", base), img_size=16)
    assert isinstance(embedded.views, BatchSeededViews)
    crops, labels = embedded.views.batch(0, list(range(8)))
    assert crops.shape == (8, 3, 16, 16) and labels.tolist() == dataset_labels(embedded.train)[:8]
    pil = build_data(
        load_finetune_config("fashion_mnist", [*base, ("data.batch_augment", False)]), 16
    )
    assert isinstance(pil.views, SeededViews) and pil.views[0][0].shape == (3, 16, 16)
    files = [("run.init", "random"), ("data.dataset", str(folder))]
    assert isinstance(build_data(load_finetune_config(None, files), 16).views, SeededViews)
    forced = load_finetune_config(None, [*files, ("data.batch_augment", True)])
    with pytest.raises(ConfigError, match="data.batch_augment: true needs images of one size"):
        build_data(forced, 16)
