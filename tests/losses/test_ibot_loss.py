"""The iBOT loss against direct formulas of docs/method.md, section "Pretraining"."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mimkit.losses import IBOTLoss, masked_patches


def reference(s_cls, s_patch, t_cls, t_patch, masks, center, center2, g, ts, tt, tp):
    views = s_cls.shape[0] // (t_cls.shape[0] // g)
    b = t_cls.shape[0] // g
    terms = []
    for q in range(g):
        t = F.softmax((t_cls[q * b : (q + 1) * b] - center) / tt, -1)
        for v in range(views):
            if v == q:
                continue
            s = F.log_softmax(s_cls[v * b : (v + 1) * b] / ts, -1)
            terms.append(-(t * s).sum(-1).mean())
    cls = sum(terms) / len(terms)
    per_crop = []
    for q in range(g):
        rows = slice(q * b, (q + 1) * b)
        t = F.softmax((t_patch[rows] - center2) / tp, -1)
        s = F.log_softmax(s_patch[rows] / ts, -1)
        ce = -(t * s).sum(-1)
        m = masks[rows].float()
        per_crop.append(((ce * m).sum(-1) / m.sum(-1).clamp(min=1)).mean())
    return cls, sum(per_crop) / g


def call(loss, s_cls, s_patch, t_cls, t_patch, masks, tt, tp, total=None):
    """The loss on the masked rows only, from dense ``[G*B, N, K]`` patch logits."""
    picked = masked_patches(masks, total)
    rows = picked.rows
    s_rows, t_rows = s_patch.flatten(0, 1)[rows], t_patch.flatten(0, 1)[rows]
    return loss(s_cls, t_cls, s_rows, t_rows, picked.weight, t_patch.mean(1), tt, tp)


@pytest.mark.parametrize(("g", "local"), [(2, 0), (2, 3), (3, 1), (1, 2)])
def test_matches_the_formulas(g, local):
    torch.manual_seed(0)
    b, n, k = 4, 9, 16
    loss = IBOTLoss(k, k, g, student_temp=0.1, center_momentum=0.9)
    loss.center.normal_()
    loss.center2.normal_()
    c1, c2 = loss.center.clone(), loss.center2.clone()
    s_cls = torch.randn((g + local) * b, k)
    s_patch, t_patch = torch.randn(g * b, n, k), torch.randn(g * b, n, k)
    t_cls = torch.randn(g * b, k)
    masks = torch.rand(g * b, n) < 0.4
    masks[0] = False  # an unmasked image contributes zero, not NaN
    out = call(loss, s_cls, s_patch, t_cls, t_patch, masks, 0.04, 0.07)
    cls, patch = reference(s_cls, s_patch, t_cls, t_patch, masks, c1, c2, g, 0.1, 0.04, 0.07)
    if g == 1 and local == 0:
        cls = torch.tensor(0.0)
    torch.testing.assert_close(out["cls"], cls)
    torch.testing.assert_close(out["patch"], patch)
    torch.testing.assert_close(out["loss"], cls + patch)
    torch.testing.assert_close(loss.center, 0.9 * c1 + 0.1 * t_cls.mean(0, keepdim=True))
    torch.testing.assert_close(loss.center2, 0.9 * c2 + 0.1 * t_patch.mean((0, 1))[None, None])


def test_known_count_and_no_masked_patch_at_all():
    torch.manual_seed(1)
    s_cls, t_cls = torch.randn(6, 8), torch.randn(6, 8)
    s_patch, t_patch = torch.randn(6, 5, 8), torch.randn(6, 5, 8)
    masks = torch.rand(6, 5) < 0.5
    a = call(IBOTLoss(8, 8, 2), s_cls, s_patch, t_cls, t_patch, masks, 0.04, 0.04)
    total = int(masks.sum())
    b = call(IBOTLoss(8, 8, 2), s_cls, s_patch, t_cls, t_patch, masks, 0.04, 0.04, total)
    torch.testing.assert_close(a["patch"], b["patch"])
    none = torch.zeros(6, 5, dtype=torch.bool)
    out = call(IBOTLoss(8, 8, 2), s_cls, s_patch, t_cls, t_patch, none, 0.04, 0.04, 0)
    assert float(out["patch"]) == 0.0 and float(out["cls"]) > 0


def test_centres_move_towards_teacher_means():
    loss = IBOTLoss(8, 8, 2, center_momentum=0.9)
    t_cls = torch.ones(6, 8) * 2.0
    t_patch = torch.ones(6, 5, 8) * 3.0
    call(
        loss,
        torch.zeros(6, 8),
        torch.zeros(6, 5, 8),
        t_cls,
        t_patch,
        torch.ones(6, 5, dtype=bool),
        0.04,
        0.04,
    )
    torch.testing.assert_close(loss.center, torch.full((1, 8), 0.2))
    torch.testing.assert_close(loss.center2, torch.full((1, 1, 8), 0.3))


def test_only_masked_patches_carry_gradient():
    loss = IBOTLoss(8, 8, 2)
    s_patch = torch.randn(4, 6, 8, requires_grad=True)
    masks = torch.zeros(4, 6, dtype=torch.bool)
    masks[:, :2] = True
    out = call(
        loss, torch.randn(4, 8), s_patch, torch.randn(4, 8), torch.randn(4, 6, 8), masks, 0.04, 0.04
    )
    out["loss"].backward()
    grad = s_patch.grad.abs().sum(-1)
    assert (grad[:, :2] > 0).all() and (grad[:, 2:] == 0).all()
    assert math.isfinite(float(out["loss"].detach()))
