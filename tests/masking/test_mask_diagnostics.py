"""The mask diagnostics' formulas on constructed inputs: a known object, known masks, a known
attention map (docs/method.md, section "Mask diagnostics")."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mimkit.masking.diagnostics import (
    chance_iou,
    mask_iou,
    normalized_entropy,
    object_coverage,
    object_patches,
    same_count_random,
    top_k_masks,
)


def test_object_patches_from_the_mean_pixel_of_each_patch():
    img = torch.zeros(1, 1, 8, 8)
    img[..., :4, :4] = 1.0  # a bright object filling the top-left patch
    img[..., :4, 4:] = 0.25  # exactly at the threshold: not "exceeds"
    img[..., 4:, 4:6] = 0.375  # the bottom-right patch half at 0.375: mean 0.1875
    objects = object_patches(img.expand(1, 3, 8, 8), 4, 0.25)
    assert objects.tolist() == [[True, False, False, False]]
    assert object_patches(img, 4, 0.125).tolist() == [[True, True, False, True]]


def test_object_coverage_and_its_chance_level():
    objects = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    masks = torch.tensor([[1, 1, 1, 0], [0, 1, 0, 0]], dtype=torch.bool)
    coverage, chance = object_coverage(masks, objects)
    assert coverage == pytest.approx(2 / 4)  # 2 of the 4 masked patches are on objects
    # random masks of counts 3 and 1: 3 x 2/4 + 1 x 1/4 object patches expected
    assert chance == pytest.approx((3 * 0.5 + 1 * 0.25) / 4)
    assert all(math.isnan(v) for v in object_coverage(torch.zeros_like(masks), objects))


def test_same_count_random_keeps_each_images_count():
    masks = torch.zeros(3, 10, dtype=torch.bool)
    masks[0, :4] = True
    masks[1, 2:3] = True
    out = same_count_random(masks, torch.Generator().manual_seed(0))
    assert out.sum(1).tolist() == [4, 1, 0]
    again = same_count_random(masks, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    draws = torch.stack([same_count_random(masks[:1]) for _ in range(200)]).float()
    assert draws.mean(0).squeeze().sub(0.4).abs().max() < 0.15  # every patch equally likely


def test_top_k_masks_pick_the_highest_scores():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.9], [4.0, 3.0, 2.0, 1.0]])
    out = top_k_masks(scores, torch.tensor([2, 1]))
    assert out.tolist() == [[False, True, False, True], [True, False, False, False]]


def test_mask_iou_of_known_sets():
    a = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    iou = mask_iou(a, b)
    assert iou[:2].tolist() == pytest.approx([1 / 3, 1.0]) and math.isnan(iou[2])


@pytest.mark.parametrize(("k", "n"), [(1, 5), (2, 6), (3, 7), (4, 8)])
def test_chance_iou_is_the_mean_over_every_pair_of_subsets(k, n):
    subsets = [set(c) for c in itertools.combinations(range(n), k)]
    brute = sum(len(a & b) / len(a | b) for a in subsets for b in subsets) / len(subsets) ** 2
    assert chance_iou(k, n) == pytest.approx(brute)
    assert chance_iou(n, n) == 1.0 and math.isnan(chance_iou(0, n))


def test_normalized_entropy_of_known_attention():
    uniform = torch.full((1, 16), 0.3)
    peaked = torch.zeros(1, 16)
    peaked[0, 5] = 2.0
    two = torch.zeros(1, 16)
    two[0, :2] = 1.0
    h = normalized_entropy(torch.cat([uniform, peaked, two]))
    assert h.tolist() == pytest.approx([1.0, 0.0, math.log(2) / math.log(16)])
