"""Backbone + head under the ``backbone.`` / ``head.`` names that DINO and iBOT checkpoints use.

The student's head runs only on the tokens a loss reads: every CLS token, the masked patches
(the patch term) and the patches the dense contrastive term picks. The teacher's head runs on
every patch, because the patch centre is the mean of all its patch logits; its prototype
layer runs on the mean embedding instead (it is linear) and on the masked rows.

Optional score heads (``models/score_heads.py``): the student's loss predictor ``pred`` runs on
the masked patch tokens (the patch term's rows), the teacher's on every patch of its unmasked
crops, where its scores join the readout as ``patch_scores["pred"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mimkit.models.backbone import Backbone
from mimkit.models.head import IBOTHead
from mimkit.models.readout import Readout, ReadoutRequest


@dataclass
class StudentOutput:
    cls_logits: Tensor  # [V*B, K]: the global crops first, then the local crops
    patch_logits: Tensor  # [M, K2]: the rows ``patch_rows`` of the global crops' patches
    patch_embed: Tensor  # [E, bottleneck], L2-normalised: the rows ``embed_rows``
    global_cls: Tensor  # [G*B, D]: the global crops' pooled tokens (a ViT's CLS token)
    predicted_loss: Tensor | None = None  # [M]: the loss predictor on the ``patch_rows``


@dataclass
class TeacherOutput:
    cls_logits: Tensor  # [B, K]
    patch_embed: Tensor  # [B*N, bottleneck], L2-normalised, row-major over (image, patch)
    patch_mean_logits: Tensor  # [B, K2]: each image's patch logits averaged over its patches
    readout: Readout
    patch_tokens: Tensor  # [B, N, D]: the backbone's last-layer patch tokens


class IBOTNetwork(nn.Module):
    def __init__(
        self, backbone: Backbone, head: IBOTHead, score_heads: nn.ModuleDict | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.score_heads = score_heads

    def score_head(self, kind: str) -> nn.Module | None:
        heads = self.score_heads
        return heads[kind] if heads is not None and kind in heads else None

    def forward(
        self,
        global_views: Tensor,
        masks: Tensor,
        local_views: Tensor | None,
        patch_rows: Tensor,
        embed_rows: Tensor | None = None,
    ) -> StudentOutput:
        """The student on every view in one call (so DDP sees one forward per backward).

        ``patch_rows`` / ``embed_rows``: flat rows of the global crops' ``[B*N]`` patch tokens
        whose prototype logits / bottleneck embeddings are wanted; no other patch goes
        through the head.
        """
        f = self.backbone.forward_features(global_views, masks)
        cls = [f.pooled]
        if local_views is not None:  # local crops: only their pooled token is ever used
            cls.append(self.backbone.forward_features(local_views).pooled)
        rows = patch_rows if embed_rows is None else torch.cat([patch_rows, embed_rows])
        picked = f.patches.flatten(0, 1).index_select(0, rows)
        z = self.head.embed(torch.cat([*cls, picked]))  # one MLP pass over every needed token
        n_cls, m = sum(c.shape[0] for c in cls), patch_rows.shape[0]
        predictor = self.score_head("pred")
        return StudentOutput(
            self.head.last_layer(z[:n_cls]),
            self.head.patch_layer(z[n_cls : n_cls + m]),
            z[n_cls + m :],
            f.pooled,
            predictor(picked[:m]) if predictor is not None else None,
        )

    @torch.no_grad()
    def encode(self, images: Tensor, request: ReadoutRequest | None = None) -> TeacherOutput:
        """The teacher on the unmasked global crops: CLS logits, every patch's embedding, the
        mean patch logits and the attention ``request`` asked for."""
        f = self.backbone.forward_features(images, None, request)
        z_cls, z = self.head.embed(f.pooled), self.head.embed(f.patches)
        # mean_j (W z_j) = W mean_j z_j: the prototype layer has no bias.
        mean_logits = self.head.patch_layer(z.float().mean(dim=1))
        predictor = self.score_head("pred")
        if predictor is not None:
            f.readout.patch_scores["pred"] = predictor(f.patches).float()
        return TeacherOutput(
            self.head.last_layer(z_cls), z.flatten(0, 1), mean_logits, f.readout, f.patches
        )

    def no_weight_decay(self) -> set[str]:
        return {f"backbone.{name}" for name in self.backbone.no_weight_decay()}
