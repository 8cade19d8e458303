"""The iBOT objective: self-distillation on the CLS token across views, and on masked patch
tokens within the same view (docs/method.md, section "Pretraining")."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def _cross_entropy(teacher_probs: Tensor, student_log_probs: Tensor) -> Tensor:
    return -(teacher_probs * student_log_probs).sum(dim=-1)


class IBOTLoss(nn.Module):
    """CLS term over every (teacher global crop q, student crop v != q) pair, plus the patch term
    on each global crop's masked patches, with centred, sharpened teacher targets. The patch
    term takes the masked patches only (see :mod:`mimkit.losses.masked`): the unmasked ones
    have weight zero, so nobody needs to compute their student or teacher logits.

    Teacher temperatures are passed per call so that their warm-up schedule lives with the
    other schedules. Centres are updated after each call from the teacher outputs, averaged
    over all processes when a process group is initialised.
    """

    def __init__(
        self,
        out_dim: int,
        patch_out_dim: int,
        num_global_crops: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        lambda1: float = 1.0,
        lambda2: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_global = num_global_crops
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("center2", torch.zeros(1, 1, patch_out_dim))

    def forward(
        self,
        student_cls: Tensor,
        teacher_cls: Tensor,
        student_patch: Tensor,
        teacher_patch: Tensor,
        patch_weight: Tensor,
        teacher_patch_mean: Tensor,
        teacher_temp: float,
        teacher_patch_temp: float,
    ) -> dict[str, Tensor]:
        """Shapes: student_cls ``[V*B, K]`` (global crops first, then local), teacher_cls
        ``[G*B, K]``; student_patch and teacher_patch ``[M, K2]``, the masked patches only, with
        ``patch_weight [M]`` from :func:`mimkit.losses.masked.masked_patches` (the patch term is
        ``sum(weight * ce)``: per image the mean over its masked patches, then the mean over
        images); teacher_patch_mean ``[G*B, K2]``, each image's teacher patch logits averaged
        over all of its patches (for the centre). Besides the weighted total ``loss`` and the
        detached terms ``cls`` and ``patch``, ``patch_ce [M]`` is every masked patch's own
        cross-entropy, detached (what a loss predictor learns to rank)."""
        g = self.num_global
        s_cls = F.log_softmax(student_cls.float() / self.student_temp, dim=-1)
        t_cls = F.softmax((teacher_cls.float() - self.center) / teacher_temp, dim=-1)
        s_views = s_cls.chunk(s_cls.shape[0] // (teacher_cls.shape[0] // g))
        t_views = t_cls.chunk(g)

        cls_terms = [
            _cross_entropy(t_views[q], s_views[v]).mean()
            for q in range(g)
            for v in range(len(s_views))
            if v != q
        ]
        cls_loss = torch.stack(cls_terms).mean() if cls_terms else s_cls.new_zeros(())

        s_patch = F.log_softmax(student_patch.float() / self.student_temp, dim=-1)
        t_patch = F.softmax((teacher_patch.float() - self.center2[0]) / teacher_patch_temp, dim=-1)
        patch_ce = _cross_entropy(t_patch, s_patch)
        patch_loss = (patch_ce * patch_weight).sum()

        self.update_center(teacher_cls, teacher_patch_mean)
        total = self.lambda1 * cls_loss + self.lambda2 * patch_loss
        return {
            "loss": total,
            "cls": cls_loss.detach(),
            "patch": patch_loss.detach(),
            "patch_ce": patch_ce.detach(),
        }

    @torch.no_grad()
    def update_center(self, teacher_cls: Tensor, teacher_patch_mean: Tensor) -> None:
        cls_sum = teacher_cls.float().sum(dim=0, keepdim=True)
        patch_sum = teacher_patch_mean.float().sum(dim=0, keepdim=True).unsqueeze(1)
        count = torch.tensor(float(teacher_cls.shape[0]), device=teacher_cls.device)
        if dist.is_available() and dist.is_initialized():
            for t in (cls_sum, patch_sum, count):
                dist.all_reduce(t)
        mo = self.center_momentum
        self.center.mul_(mo).add_(cls_sum / count, alpha=1 - mo)
        self.center2.mul_(mo).add_(patch_sum / count, alpha=1 - mo)
