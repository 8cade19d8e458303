"""End-to-end fine-tuning of a pretrained (or random) backbone with a linear classifier,
following the iBOT / BEiT protocol: a method on the training engine (``mimkit.train``)."""

from mimkit.finetune.config import FinetuneConfig, load_finetune_config
from mimkit.finetune.optim import layer_decay_groups, layer_id
from mimkit.finetune.run import (
    FinetuneResult,
    build_finetuning,
    default_output_dir,
    finetune,
    run_finetuning,
)

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "build_finetuning",
    "default_output_dir",
    "finetune",
    "layer_decay_groups",
    "layer_id",
    "load_finetune_config",
    "run_finetuning",
]
