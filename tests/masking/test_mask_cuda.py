"""The same masks on a GPU: device placement, generators on either device, parity with CPU.

Skipped where no CUDA device is present (CI); run on a GPU machine with
``PYTHONPATH=src python -m pytest tests/masking/test_mask_cuda.py``.
"""

import math

import pytest
import torch

from mimkit.masking import (
    MaskGenerator,
    block_mask,
    parse_strategies,
    random_mask,
    select_mask,
)
from mimkit.masking.config import MaskingConfig
from mimkit.models import ReadoutRequest, build_vit
from mimkit.models.readout import ReadoutRecorder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def exact_float32():
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("gen_device", ["cuda", "cpu", None])
@pytest.mark.parametrize("mode", ["high", "low", "hint"])
def test_select_on_cuda(mode, gen_device):
    scores = torch.rand(37, 196, generator=torch.Generator().manual_seed(0))
    ratio = torch.linspace(0.05, 0.95, 37)
    g = torch.Generator(device=gen_device).manual_seed(1) if gen_device else None
    m = select_mask(scores.cuda(), ratio.cuda(), mode, generator=g)
    assert m.device.type == "cuda"
    ref = select_mask(scores, ratio, mode, generator=torch.Generator().manual_seed(1))
    assert torch.equal(m.sum(1).cpu(), ref.sum(1))
    if mode != "hint":
        assert torch.equal(m.cpu(), ref)


@pytest.mark.parametrize("gen_device", ["cuda", "cpu"])
def test_random_and_block_on_cuda(gen_device):
    g = torch.Generator(device=gen_device).manual_seed(0)
    r = torch.rand(64, generator=torch.Generator().manual_seed(0)) * 0.5
    m = random_mask(64, 196, r, g, "cuda")
    assert m.device.type == "cuda"
    assert torch.equal(m.sum(1).cpu(), torch.floor(r.double() * 196 + 1e-9).long())
    b1 = block_mask(64, 14, r, torch.Generator(device=gen_device).manual_seed(3), "cuda")
    b2 = block_mask(64, 14, r, torch.Generator(device=gen_device).manual_seed(3), "cuda")
    assert b1.device.type == "cuda" and torch.equal(b1, b2)
    budget = torch.floor(r.double() * 196 + 1e-9).long()
    cover = b1.flatten(1).sum(1).cpu()
    assert (cover <= budget).all() and cover.float().mean() > 0.8 * budget.float().mean()


def _rollout(maps):
    recorder = ReadoutRecorder(ReadoutRequest(rollout_ranges=frozenset({(0, len(maps) - 1)})))
    for i, a in enumerate(maps):
        recorder.record(i, None, a.mean(1))
    return recorder.readout.rollout[(0, len(maps) - 1)]


def test_rollout_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    atts = [torch.randn(4, 3, 50, 50, generator=g).softmax(-1) for _ in range(5)]
    cpu = _rollout(atts)
    gpu = _rollout([a.cuda() for a in atts])
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-6, rtol=1e-5)


def test_generator_end_to_end_on_cuda():
    torch.manual_seed(0)
    vit = build_vit("vit_nano").eval()
    texts = ["high@raw:-1", "hint@rollout", "low@multi:0+2", "random", "block"]
    b, crops = 6, len(texts)
    gen = MaskGenerator(parse_strategies(texts, crops, vit.depth), MaskingConfig(), vit.depth)
    x = torch.randn(crops * b, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f_cpu = vit.forward_features(x, request=gen.readout_request())
        tok_cpu, ro_cpu = f_cpu.patches, f_cpu.readout
        vit_gpu = vit.cuda()
        f_gpu = vit_gpu.forward_features(x.cuda(), request=gen.readout_request())
        tok_gpu, ro_gpu = f_gpu.patches, f_gpu.readout
        plain = vit_gpu(x.cuda()).patches
    torch.testing.assert_close(tok_gpu, plain, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tok_gpu.cpu(), tok_cpu, atol=1e-4, rtol=1e-4)
    for layer, a in ro_cpu.cls_attn.items():
        torch.testing.assert_close(ro_gpu.cls_attn[layer].cpu(), a, atol=1e-5, rtol=1e-4)
    for key, r in ro_cpu.rollout.items():
        torch.testing.assert_close(ro_gpu.rollout[key].cpu(), r, atol=1e-5, rtol=1e-4)
    masks = gen.generate(ro_gpu, b, 4, torch.Generator(device="cuda").manual_seed(0))
    assert all(m.device.type == "cuda" and m.shape == (b, 4, 4) for m in masks)
    for m in masks:
        assert (m.flatten(1).sum(1) <= math.floor(0.5 * 16)).all()
