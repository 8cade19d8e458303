"""KoLeo regulariser (DINOv2): spread the CLS embeddings of a batch over the sphere.

From the Kozachenko-Leonenko differential-entropy estimator: for each L2-normalised
embedding ``x_i`` of a batch, ``d_i`` is the distance to its nearest other embedding, and
the loss is ``-mean_i log(d_i + eps)``. Minimising it pushes close embeddings apart, which
keeps nearest-neighbour structure in the features (the k-NN evaluation reads exactly that).
DINOv2 applies it to the student's CLS token of each global crop, batch by batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KoLeoLoss(nn.Module):
    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, D]`` (one crop's batch; B >= 2) -> scalar."""
        x = F.normalize(x.float(), dim=-1, eps=self.eps)
        sim = x @ x.T
        sim.fill_diagonal_(-2.0)  # below any cosine: never one's own neighbour
        nearest = sim.argmax(dim=1)
        dist = (x - x[nearest]).norm(dim=-1)
        return -torch.log(dist + self.eps).mean()
