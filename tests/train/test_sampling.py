"""The per-image views draw from a seeded fork of torch's global RNG."""

import torch

from mimkit.ibot.config import PretrainConfig
from mimkit.ibot.data import build_train_data
from mimkit.train.batches import BatchKey, BatchViews
from mimkit.train.distributed import DistInfo


def test_per_image_views_leave_the_global_rng_alone():
    cfg = PretrainConfig()
    cfg.model.img_size, cfg.data.local_crops, cfg.data.subset = 28, 0, 10
    data = build_train_data(cfg, DistInfo())
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    BatchViews(data.views)[BatchKey(0, (0, 1, 2))]
    assert torch.equal(torch.rand(3), expected)
