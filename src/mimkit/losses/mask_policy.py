"""The adversarial mask policy's objective (docs/method.md, section "Learned scores"), after
ADIOS (Shi et al., ICML 2022), AutoMAE (Chen et al., 2023) and CL-MAE (Madan et al., WACV
2024), with no extra forward pass.

A policy head gives logits ``a [B, N]`` on the teacher's detached patch tokens; the masks are
their (Gumbel-)top-k. Two estimators of its gradient:

- ``straight_through``: the student's mask is ``m + s - sg(s)`` with the relaxation
  ``s = sigmoid(y - theta)`` (``y`` the perturbed logits, ``theta`` half-way between the last
  masked and the first unmasked), so the iBOT loss reaches the logits through the mask-token
  mixing (``models/mask_token.py``); a gradient-reversal layer multiplies it by ``-lambda``,
  so ``lambda = +1`` raises the student's loss (an adversary), ``-1`` lowers it (a partner).
- ``reinforce``: ``-lambda (R - mean R) log p(m)``, with ``R`` an image's detached patch
  loss and ``p`` the Plackett-Luce probability of drawing its masked patches in their order.

Both add an entropy bonus ``-beta H(softmax(a / tau))`` against collapse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mimkit.losses.masked import ImageSlots
from mimkit.masking import MaskStrategy, ScoreSpec
from mimkit.masking.diagnostics import mean_iou, spearman_per_image, top_k_masks
from mimkit.masking.stochastic import first_ranks, perturbed_scores
from mimkit.models.readout import Readout

ADV_ESTIMATORS = ("straight_through", "reinforce")


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, lam: float) -> Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.lam * grad, None


def reverse_gradient(x: Tensor, lam: float) -> Tensor:
    """Identity forward; the gradient multiplied by ``-lam`` backward."""
    return _ReverseGradient.apply(x, lam)


def straight_through_mask(mask: Tensor, perturbed: Tensor) -> Tensor:
    """``[B, N]`` float, equal to ``mask`` in value, whose gradient is that of
    ``sigmoid(perturbed - theta)``, ``theta`` per row half-way between the smallest
    perturbed score of the masked patches and the largest of the others (a constant).
    Rows that mask nothing, or everything, carry no gradient."""
    y = perturbed.float()
    with torch.no_grad():
        lowest_in = torch.where(mask, y, torch.inf).amin(1)
        highest_out = torch.where(mask, -torch.inf, y).amax(1)
        split = mask.any(1) & (~mask).any(1)
        theta = torch.where(split, (lowest_in + highest_out) / 2, 0.0)
    soft = torch.sigmoid(y - theta[:, None])
    through = torch.where(split[:, None], soft - soft.detach(), 0.0)
    return mask.float() + through


def plackett_luce_log_prob(logits: Tensor, mask: Tensor, perturbed: Tensor) -> Tensor:
    """``[B]``: log-probability, under Plackett-Luce with ``logits``, of drawing the masked
    patches without replacement in decreasing order of ``perturbed`` (the order Gumbel-top-k
    drew them in): ``sum_i a_(i) - log sum_{j not yet drawn} exp(a_j)``."""
    a = logits.float()
    order = torch.where(mask, perturbed.detach().float(), -torch.inf).argsort(1, descending=True)
    drawn = first_ranks(mask.sum(1), mask.shape[1])  # [B, N]: the first k sorted places
    a_sorted = a.gather(1, order)
    a_drawn = torch.where(drawn, a_sorted, -torch.inf)
    # log-sum-exp of the drawn ones from place i on, and of the never-drawn ones.
    later = a_drawn.flip(1).logcumsumexp(1).flip(1)
    never = torch.where(mask, -torch.inf, a).logsumexp(1, keepdim=True)
    step = a_sorted - torch.logaddexp(later, never)
    return torch.where(drawn, step, 0.0).sum(1)


def softmax_entropy(logits: Tensor) -> Tensor:
    """``[B]``: the entropy of ``softmax(logits)`` per row, in nats."""
    logp = logits.float().log_softmax(1)
    return -(logp.exp() * logp).sum(1)


class MaskPolicyObjective:
    """The policy's terms in one step, for the crops whose strategy scores by ``adv``.

    ``crops`` of the batch's ``G`` global crops (rows ``c B .. (c+1) B - 1``) are the policy's;
    ``tau`` is each one's sampling temperature (1 for ``high``). ``iou_score``: the score
    AttMask-High would mask by (the last block's CLS attention), for the IoU diagnostic;
    None on backbones without one."""

    def __init__(
        self,
        strategies: Sequence[MaskStrategy],
        estimator: str,
        entropy_weight: float,
        iou_score: ScoreSpec | None,
    ) -> None:
        self.crops = [
            c for c, s in enumerate(strategies) if s.score is not None and s.score.kind == "adv"
        ]
        # sample@adv draws with its temperature and the planned Gumbel noise; high@adv ranks
        # the logits themselves (temperature 1, no noise).
        self.sampled = {c for c in self.crops if strategies[c].mode == "sample"}
        self.tau = {c: strategies[c].options.tau if c in self.sampled else 1.0 for c in self.crops}
        self.estimator = estimator
        self.entropy_weight = entropy_weight
        self.iou_score = iou_score

    def _perturbed(self, c: int, logits: Tensor, keys: Tensor | None) -> Tensor:
        if c not in self.sampled or keys is None:  # or masks given without their draws
            return logits / self.tau[c]
        return perturbed_scores(logits, keys, self.tau[c])

    def student_masks(
        self, masks: Tensor, logits: Tensor, keys: Tensor | None, batch: int, lam: float
    ) -> Tensor:
        """The masks ``[G*B, N]`` the student reads: with the straight-through estimator, the
        policy's crops as :func:`straight_through_mask` of gradient-reversed logits."""
        if self.estimator != "straight_through":
            return masks
        out = masks.float()
        reversed_logits = reverse_gradient(logits, lam)
        parts = list(out.split(batch))
        for c in self.crops:
            rows = slice(c * batch, (c + 1) * batch)
            crop_keys = keys[c] if keys is not None else None
            perturbed = self._perturbed(c, reversed_logits[rows], crop_keys)
            parts[c] = straight_through_mask(masks[rows], perturbed)
        return torch.cat(parts)

    def __call__(
        self,
        logits: Tensor,
        masks: Tensor,
        keys: Tensor | None,
        batch: int,
        lam: float,
        patch_ce: Tensor,
        slots: ImageSlots,
        readout: Readout,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The policy's loss (entropy bonus, and REINFORCE's term) and its diagnostics:
        ``adv_entropy`` (nats, mean over images), ``adv_rho`` (Spearman of logit and real
        loss on the masked patches) and ``adv_iou`` (with AttMask-High at the same counts).
        ``logits``, ``masks`` ``[G*B, N]``; ``keys [G, B, N]`` the plan's draws or None;
        ``patch_ce [M]`` the masked patches' detached iBOT losses, laid out by ``slots``."""
        rows = {c: slice(c * batch, (c + 1) * batch) for c in self.crops}
        scaled = {c: logits[r] / self.tau[c] for c, r in rows.items()}
        entropy = torch.stack([softmax_entropy(a) for a in scaled.values()]).mean()
        loss = -self.entropy_weight * entropy
        if self.estimator == "reinforce":
            loss = loss - lam * self._reinforce(logits, masks, keys, patch_ce, slots, rows)
        stats = self._diagnostics(logits, masks, batch, patch_ce, slots, readout)
        return loss, {"adv_entropy": entropy.detach(), **stats}

    def _reinforce(
        self,
        logits: Tensor,
        masks: Tensor,
        keys: Tensor | None,
        patch_ce: Tensor,
        slots: ImageSlots,
        rows: dict[int, slice],
    ) -> Tensor:
        """``mean (R - mean R) log p(m)`` over the masked images of the policy's crops, ``R``
        the image's mean patch loss (detached), the mean taken per crop."""
        counts = masks.sum(1)
        reward = torch.zeros(slots.images, device=patch_ce.device)
        reward = reward.index_add(0, slots.image, patch_ce.float()) / counts.clamp_min(1)
        terms = []
        for c, r in rows.items():
            crop_keys = keys[c] if keys is not None else None
            perturbed = self._perturbed(c, logits[r].detach(), crop_keys)
            log_p = plackett_luce_log_prob(logits[r] / self.tau[c], masks[r], perturbed)
            used = counts[r] > 0
            n = used.sum().clamp_min(1)
            baseline = torch.where(used, reward[r], 0.0).sum() / n
            advantage = torch.where(used, reward[r] - baseline, 0.0)
            terms.append((advantage * log_p).sum() / n)
        return torch.stack(terms).mean()

    @torch.no_grad()
    def _diagnostics(
        self,
        logits: Tensor,
        masks: Tensor,
        batch: int,
        patch_ce: Tensor,
        slots: ImageSlots,
        readout: Readout,
    ) -> dict[str, Tensor]:
        ours = torch.zeros(slots.images, dtype=torch.bool, device=masks.device)
        for c in self.crops:
            ours[c * batch : (c + 1) * batch] = True
        chosen = logits.detach().flatten()[slots.rows]
        valid = slots.valid & ours[:, None]
        stats = {"adv_rho": spearman_per_image(slots.pad(chosen), slots.pad(patch_ce), valid)}
        if self.iou_score is not None:
            ious = []
            for c in self.crops:
                r = slice(c * batch, (c + 1) * batch)
                attention = self.iou_score.compute(readout.rows(r))
                ious.append(mean_iou(masks[r], top_k_masks(attention, masks[r].sum(1))))
            stats["adv_iou"] = torch.stack(ious).mean()
        return stats
