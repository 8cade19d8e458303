"""Why strategies differ: the mask diagnostics of an iBOT model on a fixed batch of val
images (docs/method.md, section "Mask diagnostics"), as an epoch hook of pretraining and
from a saved checkpoint (for runs trained without the hook).

The batch is the same at every epoch and for every strategy: ``DIAGNOSTIC_IMAGES`` val
images spread evenly over the split, shown unaugmented as every global crop. Each crop is
masked by its strategy with the run's masking settings, every image masked
(``mask_prob`` 1), from a generator seeded by the run's seed (so that at one seed every
strategy draws the same mask ratios, and the values over seeds include the masks' own
randomness).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mimkit.data import build_dataset, default_normalization, eval_transform, parse_data_spec
from mimkit.ibot.config import PretrainConfig
from mimkit.ibot.meta_arch import IBOTMetaArch, build_network, policy_scores
from mimkit.losses import masked_patches
from mimkit.masking import MaskGenerator, cls_attention_scores, parse_strategies
from mimkit.masking.diagnostics import (
    chance_iou,
    mask_iou,
    normalized_entropy,
    object_coverage,
    object_patches,
    same_count_random,
    top_k_masks,
)
from mimkit.models import CLS_ROWS, ReadoutRequest
from mimkit.models.network import IBOTNetwork, TeacherOutput
from mimkit.train.checkpoint import load_checkpoint

DIAGNOSTICS_VERSION = 1  # bump when a definition changes: recorded values are then redone
DIAGNOSTIC_IMAGES = 64
# Data whose objects lie on a black background: a patch is "object" when its mean pixel
# (in [0, 1]) exceeds this. Other data have no object rule (the coverage is left empty).
OBJECT_THRESHOLDS: dict[str, float] = {"embedded": 0.1, "fashion-mnist": 0.1, "mnist": 0.1}
KEYS = (
    "object_coverage",  # share of masked patches on the object
    "object_chance",  # the same for random masks of the same counts
    "hardness",  # patch-term cross-entropy on the masks / on random masks of the same counts
    "iou_high",  # IoU with AttMask-High's masks of the same counts
    "iou_chance",  # the same for two random masks of those counts
    "attention_entropy",  # of the teacher's last-block CLS attention, / log N
)


@dataclass
class DiagnosticBatch:
    images: Tensor  # [B, C, H, W], normalised as training sees them
    objects: Tensor | None  # [B, N] bool on the mask grid; None without an object rule
    seed: int = 0  # of the masks' random draws


def val_images(cfg: PretrainConfig, n: int) -> Tensor:
    """``n`` val images of a run with config ``cfg`` (fewer when the split is smaller),
    spread evenly over the split, normalised as training sees them ``[n, C, H, W]``."""
    spec = cfg.data.val_dataset or cfg.data.dataset
    tf = eval_transform(cfg.model.img_size, *default_normalization(cfg.data.dataset))
    ds = build_dataset(spec, "val", tf)
    picks = torch.linspace(0, len(ds) - 1, min(n, len(ds))).round().long().tolist()
    return torch.stack([ds[i][0] for i in picks])


def diagnostic_batch(cfg: PretrainConfig, grid: int) -> DiagnosticBatch:
    """The fixed val images of the diagnostics of a run with config ``cfg``."""
    images = val_images(cfg, DIAGNOSTIC_IMAGES)
    spec = cfg.data.val_dataset or cfg.data.dataset
    threshold = OBJECT_THRESHOLDS.get(parse_data_spec(spec)[0])
    objects = None
    if threshold is not None:
        mean, std = default_normalization(cfg.data.dataset)
        c = images.shape[1]
        m = torch.tensor(list(mean)[:c]).view(1, c, 1, 1)
        s = torch.tensor(list(std)[:c]).view(1, c, 1, 1)
        objects = object_patches(images * s + m, cfg.model.img_size // grid, threshold)
    return DiagnosticBatch(images, objects, cfg.run.seed)


@dataclass
class MaskedModel:
    """What the diagnostics read of an iBOT model: both networks, the masks and the patch
    term's targets (its centre and temperatures)."""

    teacher: IBOTNetwork
    student: IBOTNetwork
    masker: MaskGenerator
    patch_center: Tensor  # [1, K2]
    student_temp: float
    teacher_patch_temp: float
    progress: float = 0.0  # of training, in [0, 1]: the masks' schedules (mix's alpha)

    @classmethod
    def of_method(cls, method: IBOTMetaArch) -> MaskedModel:
        return cls(
            method.teacher,
            method.student,
            method.masker,
            method.loss.center2[0],
            method.loss.student_temp,
            method.cfg.loss.teacher_patch_temp,
            method.progress,
        )

    @classmethod
    def from_checkpoint(
        cls, cfg: PretrainConfig, path: str | Path, device: torch.device
    ) -> MaskedModel:
        """The model a training checkpoint holds (its run's config ``cfg``)."""
        state = load_checkpoint(path, map_location=device)
        teacher, student = (build_network(cfg, 0.0).to(device) for _ in range(2))
        teacher.load_state_dict(state["teacher"])
        student.load_state_dict(state["student"])
        depth = teacher.backbone.depth
        strategies = parse_strategies(cfg.masking.strategies, cfg.data.global_crops, depth)
        return cls(
            teacher,
            student,
            MaskGenerator(strategies, cfg.masking, depth),
            state["loss"]["center2"][0].to(device),
            cfg.loss.student_temp,
            cfg.loss.teacher_patch_temp,
            min(state["step"] / (state["steps_per_epoch"] * cfg.optim.epochs), 1.0),
        )


def _patch_cross_entropy(
    model: MaskedModel, views: Tensor, masks: Tensor, teacher: TeacherOutput
) -> float:
    """The patch term's mean cross-entropy over all masked patches of ``masks`` [I, N]."""
    picked = masked_patches(masks)
    if picked.count == 0:
        return math.nan
    student = model.student(views, masks, None, picked.rows)
    t_logits = model.teacher.head.patch_layer(teacher.patch_embed[picked.rows])
    t = F.softmax((t_logits.float() - model.patch_center) / model.teacher_patch_temp, dim=-1)
    s = F.log_softmax(student.patch_logits.float() / model.student_temp, dim=-1)
    return float(-(t * s).sum(dim=-1).mean())


@torch.no_grad()
def mask_diagnostics(model: MaskedModel, batch: DiagnosticBatch) -> dict[str, float]:
    """Every value of :data:`KEYS` (NaN where undefined: no object rule, or a backbone
    without CLS attention)."""
    device = next(model.teacher.parameters()).device
    backbone = model.teacher.backbone
    depth, grid = backbone.depth, backbone.grid_size()
    b, crops = batch.images.shape[0], model.masker.num_crops
    views = batch.images.to(device).repeat(crops, 1, 1, 1)  # every crop sees the same images
    attention = CLS_ROWS in backbone.readouts
    request = model.masker.readout_request()
    if attention:
        request = request.merge(ReadoutRequest(cls_layers=frozenset({depth - 1})))
    was_training = model.student.training
    model.student.eval()
    try:
        teacher = model.teacher.encode(views, request)
        if model.student.score_heads is not None and "adv" in model.student.score_heads:
            policy_scores(model.student, teacher)  # a learned policy's masks read these
        every_image = dataclasses.replace(model.masker.config, mask_prob=1.0)
        masker = MaskGenerator(model.masker.strategies, every_image, depth)
        gen = torch.Generator().manual_seed(batch.seed)
        drawn = masker.generate(teacher.readout, b, grid, gen, device, model.progress)
        masks = torch.cat(drawn).flatten(1)
        random = same_count_random(masks, gen)
        hard = _patch_cross_entropy(model, views, masks, teacher)
        easy = _patch_cross_entropy(model, views, random, teacher)
    finally:
        model.student.train(was_training)
    out = dict.fromkeys(KEYS, math.nan)
    out["hardness"] = hard / easy if easy > 0 else math.nan
    if batch.objects is not None:
        objects = batch.objects.to(device).repeat(crops, 1)
        out["object_coverage"], out["object_chance"] = object_coverage(masks, objects)
    if attention:
        score = cls_attention_scores(teacher.readout.cls_attn[depth - 1], "mean")
        counts = masks.sum(dim=1)
        iou = mask_iou(masks, top_k_masks(score, counts))
        n = masks.shape[1]
        chance = torch.tensor([chance_iou(int(k), n) for k in counts.tolist()])
        kept = counts.cpu() > 0
        out["iou_high"] = float(iou.cpu()[kept].mean())
        out["iou_chance"] = float(chance[kept].mean())
        out["attention_entropy"] = float(normalized_entropy(score[:b]).mean())
    return out


@dataclass
class MaskDiagnosticsHook:
    """The epoch hook: :func:`mask_diagnostics` every ``every`` epochs and after the last
    one (0: never), logged as ``masks_<key>``."""

    cfg: PretrainConfig
    every: int
    name: str = "masks"
    all_ranks: bool = False  # the main process measures; the others wait
    _batch: DiagnosticBatch | None = None

    def due(self, epoch: int) -> bool:
        return self.every > 0 and (epoch % self.every == 0 or epoch == self.cfg.optim.epochs)

    def __call__(self, method: Any, device: torch.device) -> dict[str, float]:
        model = MaskedModel.of_method(method)
        if self._batch is None:
            self._batch = diagnostic_batch(self.cfg, model.teacher.backbone.grid_size())
        values = mask_diagnostics(model, self._batch)
        finite = {k: v for k, v in values.items() if math.isfinite(v)}
        return {**finite, "version": float(DIAGNOSTICS_VERSION)}  # read back by compare


def checkpoint_diagnostics(
    cfg: PretrainConfig, path: str | Path, device: torch.device
) -> dict[str, float]:
    """The diagnostics of a saved training checkpoint of a run with config ``cfg``: the same
    values the hook logged at that epoch, for runs trained without it."""
    model = MaskedModel.from_checkpoint(cfg, path, device)
    batch = diagnostic_batch(cfg, model.teacher.backbone.grid_size())
    return mask_diagnostics(model, batch)
