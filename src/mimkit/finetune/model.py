"""The fine-tuned network: a pretrained (or random) backbone and a linear classifier on its
CLS token, as iBOT fine-tunes (BEiT's code with ``--use_cls``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mimkit.errors import CheckpointError
from mimkit.finetune.config import RANDOM_INIT, FinetuneConfig
from mimkit.models import Backbone, BackboneSpec, backbone_spec, build_backbone
from mimkit.weights import load_backbone, load_backbone_state, resolve_spec


class Classifier(nn.Module):
    """``backbone`` + ``nn.Linear`` on its final-norm pooled token (a ViT's CLS token).

    The classifier starts near zero (trunc-normal std 0.02 times ``init_scale``) so that the
    first steps do not send large gradients into the pretrained blocks. iBOT's mask token
    is not used here and is frozen.
    """

    def __init__(self, backbone: Backbone, num_classes: int, init_scale: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        with torch.no_grad():
            self.head.weight.mul_(init_scale)
        nn.init.zeros_(self.head.bias)
        backbone.masked_embed.requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images).pooled)


@dataclass
class InitWeights:
    """Where the backbone comes from: its resolved file (or "random"), its shape and, for a
    file, the backbone state dict to load."""

    source: str
    spec: BackboneSpec
    state: dict[str, Tensor] | None

    @property
    def description(self) -> dict[str, Any]:
        """The model description that checkpoints carry (what mimkit knn rebuilds it from)."""
        return self.spec.to_dict()


def read_init(cfg: FinetuneConfig) -> InitWeights:
    """Read the --init file (or take the random init's shape) without building the model."""
    m, init = cfg.model, cfg.run.init
    if init == RANDOM_INIT:
        return InitWeights(RANDOM_INIT, backbone_spec(m.arch, m.img_size, m.patch_size), None)
    path = Path(str(init)).expanduser()
    if not path.is_file():
        raise CheckpointError(f"--init {init}: no such file (or give --init random)")
    state, file_cfg = load_backbone_state(path, cfg.run.init_key)
    spec = resolve_spec(state, file_cfg, arch=m.arch, img_size=m.img_size, patch_size=m.patch_size)
    return InitWeights(str(path.resolve()), spec, state)


def build_classifier(
    init: InitWeights, num_classes: int, cfg: FinetuneConfig
) -> tuple[Classifier, list[str]]:
    """The classifier with the --init weights loaded strictly; notes say what was adapted."""
    torch.manual_seed(cfg.run.seed)  # same random parts for the same seed
    backbone = build_backbone(init.spec, cfg.model.drop_path_rate)
    notes: list[str] = []
    if init.state is not None:
        # An explicit image size other than the file's resizes its position embedding.
        notes = load_backbone(dict(init.state), backbone, interpolate_pos_embed=True)
    model = Classifier(backbone, num_classes, cfg.model.head_init_scale)
    return model, notes


def weight_average(model: Classifier, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights (torch's ``AveragedModel``),
    updated after every step; None when ``decay`` is 0."""
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
