"""The learned mask scores' objectives and estimators, against per-image loop references:
HPM's relative loss prediction, Spearman's rho, the Plackett-Luce log-probability of a
Gumbel-top-k draw, the straight-through mask and the gradient reversal."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.stats import spearmanr

from mimkit.losses import image_slots, masked_patches, relative_loss_prediction
from mimkit.losses.mask_policy import (
    plackett_luce_log_prob,
    reverse_gradient,
    softmax_entropy,
    straight_through_mask,
)
from mimkit.masking.diagnostics import mean_iou, spearman_per_image, top_k_masks
from mimkit.masking.stochastic import perturbed_scores
from mimkit.models.mask_token import put_mask_token

N = 12


def _masks(images: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, N, (images,), generator=g)
    counts[0] = 0  # an image without masked patches
    keys = torch.rand(images, N, generator=g)
    return keys.argsort(1).argsort(1) < counts[:, None]


def _slots(masks: torch.Tensor):
    picked = masked_patches(masks)
    return image_slots(picked.rows, N, masks.sum(1)), picked.rows


def test_slots_lay_rows_out_per_image():
    masks = _masks(6, 0)
    slots, rows = _slots(masks)
    table = slots.pad(rows.float(), -1.0)
    for i in range(6):
        own = (torch.nonzero(masks[i]).squeeze(1) + i * N).float()
        assert torch.equal(table[i, : own.numel()], own)
        assert bool((table[i, own.numel() :] == -1).all())
    assert torch.equal(slots.valid.sum(1), masks.sum(1))


def _hpm_relative(pred, target):
    """HPM's forward_learning_loss(relative=True) on one [1, L] image, restated."""
    pos = target.unsqueeze(1) > target.unsqueeze(2)
    neg = target.unsqueeze(1) < target.unsqueeze(2)
    diff = pred.unsqueeze(1) - pred.unsqueeze(2)
    up, down = torch.log(torch.sigmoid(diff)), torch.log(1 - torch.sigmoid(diff))
    loss = -pos.int() * up - neg.int() * down
    return loss.sum(), (pos | neg).sum()


def test_relative_loss_prediction_is_hpms_pairwise_loss_pooled_over_the_batch():
    masks = _masks(8, 1)
    slots, rows = _slots(masks)
    g = torch.Generator().manual_seed(2)
    predicted = torch.randn(rows.shape[0], generator=g, dtype=torch.float64)
    target = torch.randn(rows.shape[0], generator=g).round(decimals=1)  # some ties
    got = relative_loss_prediction(predicted, target, slots)
    total, pairs = 0.0, 0
    for i in range(8):
        own = slots.image == i
        s, c = _hpm_relative(predicted[own][None].float(), target[own][None])
        total, pairs = total + float(s), pairs + int(c)
    assert float(got) == pytest.approx(total / pairs, rel=1e-5)


def test_relative_loss_prediction_without_pairs_is_zero_with_a_graph():
    masks = torch.zeros(3, N, dtype=torch.bool)
    masks[1, 4] = True  # one patch: no pair
    slots, rows = _slots(masks)
    predicted = torch.zeros(rows.shape[0], requires_grad=True)
    loss = relative_loss_prediction(predicted, torch.ones(rows.shape[0]), slots)
    loss.backward()
    assert float(loss.detach()) == 0.0 and predicted.grad is not None


def test_spearman_per_image_is_scipys_mean_over_images():
    masks = _masks(10, 3)
    masks[1] = False
    masks[1, :2] = True  # two values: no rank correlation, left out
    slots, rows = _slots(masks)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(rows.shape[0], generator=g)
    y = x + torch.randn(rows.shape[0], generator=g)
    got = spearman_per_image(slots.pad(x), slots.pad(y), slots.valid)
    rhos = []
    for i in range(10):
        own = slots.image == i
        if int(own.sum()) >= 3:
            rhos.append(spearmanr(x[own].numpy(), y[own].numpy()).statistic)
    assert float(got) == pytest.approx(sum(rhos) / len(rhos), abs=1e-5)


def test_mean_iou():
    a = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    assert float(mean_iou(a, b)) == pytest.approx((1 / 3 + 1) / 2)


def test_plackett_luce_of_all_ordered_draws_sums_to_one():
    """Every ordered draw of 2 of 4 patches, its log-probability from the mask and an order."""
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.5]])
    total = 0.0
    for first, second in itertools.permutations(range(4), 2):
        mask = torch.zeros(1, 4, dtype=torch.bool)
        mask[0, [first, second]] = True
        order = torch.zeros(1, 4)
        order[0, first], order[0, second] = 2.0, 1.0  # drawn first: larger perturbed score
        log_p = plackett_luce_log_prob(logits, mask, order)
        p = logits.softmax(1)[0]
        want = p[first] * p[second] / (1 - p[first])
        assert float(log_p.exp()) == pytest.approx(float(want), rel=1e-5)
        total += float(log_p.exp())
    assert total == pytest.approx(1.0, rel=1e-5)


def test_plackett_luce_equals_a_per_image_loop():
    g = torch.Generator().manual_seed(5)
    logits, perturbed = torch.randn(7, N, generator=g), torch.randn(7, N, generator=g)
    masks = _masks(7, 6)
    got = plackett_luce_log_prob(logits, masks, perturbed)
    for b in range(7):
        drawn = sorted(torch.nonzero(masks[b]).squeeze(1).tolist(), key=lambda j: -perturbed[b, j])
        left, want = set(range(N)), 0.0
        for j in drawn:
            want += float(logits[b, j]) - math.log(sum(math.exp(logits[b, i]) for i in left))
            left.remove(j)
        assert float(got[b]) == pytest.approx(want, abs=1e-5)


def test_straight_through_mask_has_the_mask_values_and_the_relaxations_gradient():
    g = torch.Generator().manual_seed(7)
    y = torch.randn(5, N, generator=g, requires_grad=True)
    counts = torch.tensor([[0], [1], [4], [6], [N]])
    mask = y.detach().argsort(1, descending=True).argsort(1) < counts
    st = straight_through_mask(mask, y)
    assert torch.equal(st, mask.float())  # exactly 0 and 1
    upstream = torch.randn(5, N, generator=g)
    (st * upstream).sum().backward()
    for b in (1, 2, 3):
        inside = y[b][mask[b]].min()
        outside = y[b][~mask[b]].max()
        s = torch.sigmoid(y[b].detach() - (inside + outside).detach() / 2)
        torch.testing.assert_close(y.grad[b], upstream[b] * s * (1 - s))
    assert not y.grad[0].any() and not y.grad[4].any()  # nothing / everything masked


@pytest.mark.parametrize("lam", [1.0, -1.0, 0.25])
def test_reverse_gradient(lam):
    x = torch.randn(4, requires_grad=True)
    out = reverse_gradient(x, lam)
    assert torch.equal(out, x)
    out.sum().backward()
    assert torch.equal(x.grad, torch.full((4,), -lam))


def test_softmax_entropy():
    assert float(softmax_entropy(torch.zeros(1, N))) == pytest.approx(math.log(N))
    assert float(softmax_entropy(torch.tensor([[50.0, 0.0, 0.0]]))) < 1e-6


def test_put_mask_token_straight_through_changes_values_and_token_gradients_by_nothing():
    g = torch.Generator().manual_seed(8)
    tokens = torch.randn(3, N, 4, generator=g, requires_grad=True)
    token = torch.randn(1, 4, generator=g, requires_grad=True)
    hard = torch.rand(3, N, generator=g) < 0.4
    soft = (hard.float() + torch.zeros(3, N)).requires_grad_(True)
    upstream = torch.randn(3, N, 4, generator=g)

    a = put_mask_token(tokens, hard, token)
    grads_a = torch.autograd.grad((a * upstream).sum(), (tokens, token))
    b = put_mask_token(tokens, soft, token)
    grads_b = torch.autograd.grad((b * upstream).sum(), (tokens, token, soft))
    assert torch.equal(a, b)
    assert torch.equal(grads_a[0], grads_b[0]) and torch.equal(grads_a[1], grads_b[1])
    # The mask's own gradient: that of e + m (token - e).
    want = (upstream * (token - tokens)).sum(-1)
    torch.testing.assert_close(grads_b[2], want.detach())


def _toy_policy(estimator: str, lam: float, cost: torch.Tensor, k: int = 4) -> torch.Tensor:
    """Logits trained by each estimator on a toy whose loss is the summed cost of the masked
    patches (batch of 16 draws per step, Gumbel-top-k at tau 1)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.zeros(1, cost.numel(), requires_grad=True)
    opt = torch.optim.SGD([logits], lr=0.05)
    for _ in range(300):
        a = logits.expand(16, -1)
        keys = torch.rand(a.shape, generator=g)
        y = perturbed_scores(a.detach(), keys, 1.0)
        mask = top_k_masks(y, torch.full((16,), k))
        if estimator == "straight_through":
            ys = perturbed_scores(reverse_gradient(a, lam), keys, 1.0)
            loss = (straight_through_mask(mask, ys) * cost).sum(1).mean()
        else:
            reward = (mask * cost).sum(1)
            log_p = plackett_luce_log_prob(a, mask, y)
            loss = -lam * ((reward - reward.mean()) * log_p).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return logits.detach()[0]


@pytest.mark.parametrize("estimator", ["straight_through", "reinforce"])
def test_both_estimators_learn_the_right_direction_on_a_toy(estimator):
    """Where masking a patch costs it a fixed amount, lambda = +1 learns to mask the
    costliest patches and lambda = -1 the cheapest (the sign conventions, end to end)."""
    cost = torch.randn(12, generator=torch.Generator().manual_seed(3))
    top, bottom = set(cost.topk(4).indices.tolist()), set((-cost).topk(4).indices.tolist())
    assert set(_toy_policy(estimator, 1.0, cost).topk(4).indices.tolist()) == top
    assert set(_toy_policy(estimator, -1.0, cost).topk(4).indices.tolist()) == bottom
