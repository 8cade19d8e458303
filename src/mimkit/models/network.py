"""Backbone + head under the ``backbone.`` / ``head.`` names that DINO and iBOT checkpoints use."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from mimkit.models.head import IBOTHead
from mimkit.models.readout import Readout, ReadoutRequest
from mimkit.models.vit import VisionTransformer


@dataclass
class NetworkOutput:
    cls_logits: Tensor  # [B, K]
    patch_logits: Tensor | None  # [B, N, K2]
    patch_embed: Tensor | None  # [B, N, bottleneck], L2-normalised
    readout: Readout


class IBOTNetwork(nn.Module):
    def __init__(self, backbone: VisionTransformer, head: IBOTHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self,
        images: Tensor,
        mask: Tensor | None = None,
        request: ReadoutRequest | None = None,
        cls_only: bool = False,
    ) -> NetworkOutput:
        tokens, readout = self.backbone.forward_features(images, mask, request)
        if cls_only:  # local crops: their patch outputs are never used
            return NetworkOutput(
                self.head.last_layer(self.head.embed(tokens[:, 0])), None, None, readout
            )
        z = self.head.embed(tokens)
        cls_logits = self.head.last_layer(z[:, 0])
        patch_layer = (
            self.head.last_layer if self.head.last_layer2 is None else self.head.last_layer2
        )
        return NetworkOutput(cls_logits, patch_layer(z[:, 1:]), z[:, 1:], readout)
