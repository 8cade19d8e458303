"""HPM's relative loss-prediction objective (docs/method.md, section "Learned scores").

Wang et al., "Hard Patches Mining for Masked Image Modeling", CVPR 2023: a head predicts each
masked patch's loss, and learns only their order within an image. For every pair of masked
patches ``(i, j)`` of the same image whose real losses differ, ``-log sigmoid(p_j - p_i)``
when ``l_j > l_i`` (the mirror pair contributes the same), averaged over all such ordered
pairs of the batch as HPM does. The real losses are detached: only the predictor (and,
unless its input is detached, the tokens it reads) learns from this term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mimkit.losses.masked import ImageSlots
from mimkit.masking.diagnostics import spearman_per_image

PRED_GRADS = ("backbone", "head")  # where the term's gradient stops: nowhere (HPM), the head


def relative_loss_prediction(predicted: Tensor, target: Tensor, slots: ImageSlots) -> Tensor:
    """The objective for ``predicted [M]`` scores of the masked rows and their real losses
    ``target [M]``, laid out per image by ``slots``. Zero (with a graph to ``predicted``)
    when no image has two masked patches of different losses."""
    p = slots.pad(predicted.float())
    t = slots.pad(target.detach().float())
    valid = slots.valid
    gap = t[:, None, :] - t[:, :, None]  # [I, i, j]: l_j - l_i
    pairs = valid[:, None, :] & valid[:, :, None] & (gap != 0)
    # softplus(-x) = -log sigmoid(x), without HPM's +1e-6 inside the log.
    per_pair = F.softplus(-torch.sign(gap) * (p[:, None, :] - p[:, :, None]))
    total = torch.where(pairs, per_pair, 0.0).sum()
    return total / pairs.sum().clamp_min(1)


def loss_prediction_terms(
    predicted: Tensor, patch_ce: Tensor, teacher_scores: Tensor, slots: ImageSlots
) -> tuple[Tensor, dict[str, Tensor]]:
    """The objective on the student's ``predicted [M]`` losses of the masked rows, and its
    diagnostics: ``pred_rho``, Spearman's correlation of the EMA predictor's scores
    ``teacher_scores [I, N]`` (on the unmasked crops, what the masks were chosen by) with the
    real losses of the masked patches, per image; ``pred_rho_student``, the same for the
    student's own predictions on the masked crops (what the objective trains)."""
    loss = relative_loss_prediction(predicted, patch_ce, slots)
    with torch.no_grad():
        real, valid = slots.pad(patch_ce.float()), slots.valid
        chosen = teacher_scores.detach().flatten()[slots.rows].float()
        own = predicted.detach().float()
        stats = {
            "pred": loss.detach(),
            "pred_rho": spearman_per_image(slots.pad(chosen), real, valid),
            "pred_rho_student": spearman_per_image(slots.pad(own), real, valid),
        }
    return loss, stats
