"""End-to-end fine-tuning of a pretrained (or random) backbone with a linear classifier,
following the iBOT / BEiT protocol."""

from mimkit.finetune.config import FinetuneConfig, load_finetune_config
from mimkit.finetune.optim import layer_decay_groups, layer_id
from mimkit.finetune.trainer import Finetuner, default_output_dir, finetune

__all__ = [
    "FinetuneConfig",
    "Finetuner",
    "default_output_dir",
    "finetune",
    "layer_decay_groups",
    "layer_id",
    "load_finetune_config",
]
