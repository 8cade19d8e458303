"""The step runs the heads on the tokens the loss reads only; it must give the same loss
values, gradients and centres as running both heads on every token (the plain computation,
written out here from the formulas)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mimkit.data.crops import Crops
from mimkit.ibot.meta_arch import IBOTMetaArch
from mimkit.ibot.pretrain import build_pretraining
from mimkit.losses.contrastive import DenseContrastiveLoss


def varied_masks(images: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Masks with every count from 0 to n over the images (zero-masked images included)."""
    masks = torch.zeros(images, n, dtype=torch.bool)
    for i in range(images):
        count = (i * 5) % (n + 1) if i % 4 else 0
        masks[i, torch.randperm(n, generator=gen)[:count]] = True
    return masks


def full_computation(trainer: IBOTMetaArch, global_views, local_views, masks, tt, tp):
    """Both heads on every token; the patch term as the per-image masked mean."""
    cfg, s, t, lo = trainer.cfg, trainer.student, trainer.teacher, trainer.loss
    g = cfg.data.global_crops
    b = global_views.shape[0] // g
    def heads(net, f):
        return net.head.last_layer(net.head.embed(f.pooled)), net.head.patch_layer(
            net.head.embed(f.patches)
        )

    with torch.no_grad():
        t_f = t.backbone.forward_features(global_views, None, trainer.request)
        t_cls, t_patch = heads(t, t_f)
        readout = t_f.readout
    s_f = s.backbone.forward_features(global_views, masks)
    s_cls, s_patch = heads(s, s_f)
    s_cls = torch.cat([s_cls, heads(s, s.backbone.forward_features(local_views))[0]])

    ts = cfg.loss.student_temp
    s_views = F.log_softmax(s_cls / ts, -1).chunk(s_cls.shape[0] // b)
    t_views = F.softmax((t_cls - lo.center) / tt, -1).chunk(g)
    cls_terms = [
        -(t_views[q] * s_views[v]).sum(-1).mean()
        for q in range(g)
        for v in range(len(s_views))
        if v != q
    ]
    cls = sum(cls_terms) / len(cls_terms)
    ce = -(F.softmax((t_patch - lo.center2) / tp, -1) * F.log_softmax(s_patch / ts, -1)).sum(-1)
    m = masks.float()
    patch = ((ce * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()
    terms = {"cls": cls, "patch": patch}
    loss = cfg.loss.lambda1 * cls + cfg.loss.lambda2 * patch
    if cfg.loss.lambda3 > 0:
        scores = torch.stack(
            [trainer.masker.scores(readout, c, b, trainer.contrastive_score) for c in range(g)]
        )
        z = s.head.embed(s_f.patches)
        con = DenseContrastiveLoss(cfg.loss.contrastive_k, cfg.loss.contrastive_tau)(
            z.reshape(g, b, *z.shape[1:]), scores
        )
        terms["contrastive"] = con
        loss = loss + cfg.loss.lambda3 * con
    mo = cfg.loss.center_momentum
    centres = (
        mo * lo.center + (1 - mo) * t_cls.mean(0, keepdim=True),
        mo * lo.center2 + (1 - mo) * t_patch.mean((0, 1))[None, None],
    )
    return loss, terms, centres


def gradients(trainer: IBOTMetaArch) -> dict[str, torch.Tensor | None]:
    return {
        n: None if p.grad is None else p.grad.clone()
        for n, p in trainer.student.named_parameters()
    }


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"model.shared_head": False, "masking.strategies": ["high@raw:1", "random"]},
        {"loss.lambda3": 0.5, "loss.contrastive_k": 3},
    ],
    ids=["shared", "separate-patch-head", "contrastive"],
)
@pytest.mark.parametrize("all_unmasked", [False, True], ids=["varied", "none-masked"])
def test_masked_rows_give_the_full_loss_and_gradients(make_config, fields, all_unmasked):
    cfg = make_config(**{"model.drop_path_rate": 0.2, "masking.strategies": ["high"], **fields})
    trainer = build_pretraining(cfg).method
    gen = torch.Generator().manual_seed(0)
    g, b, n = 2, 6, trainer.student.backbone.num_patches
    global_views = torch.randn(g * b, 3, 16, 16, generator=gen)
    local_views = torch.randn(b, 3, 8, 8, generator=gen)
    masks = varied_masks(g * b, n, gen)
    if all_unmasked:
        masks[:] = False
    tt, tp = 0.04, 0.07
    trainer.loss.center.normal_(generator=gen)
    trainer.loss.center2.normal_(generator=gen)

    torch.manual_seed(1)  # the same drop-path draws in both
    loss, terms, centres = full_computation(trainer, global_views, local_views, masks, tt, tp)
    loss.backward()
    expected = gradients(trainer)
    trainer.student.zero_grad(set_to_none=True)

    torch.manual_seed(1)
    views = Crops.from_list([*global_views.chunk(g), local_views], g)
    out = trainer.losses(views, tt, tp, masks)
    out.loss.backward()
    got = gradients(trainer)

    torch.testing.assert_close(out.loss, loss)
    assert out.terms.keys() == terms.keys()
    for key, value in terms.items():
        torch.testing.assert_close(out.terms[key], value.detach())
    torch.testing.assert_close(trainer.loss.center, centres[0])
    torch.testing.assert_close(trainer.loss.center2, centres[1])
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        if grad is None:
            assert got[name] is None, name
        else:
            torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    if all_unmasked:
        assert float(out.terms["patch"]) == 0.0
    # Every parameter that can learn got a gradient (the rows reach the whole head).
    assert sum(grad is not None and bool(grad.abs().sum() > 0) for grad in got.values()) > 10
