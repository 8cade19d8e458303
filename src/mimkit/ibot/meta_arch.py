"""The iBOT meta-architecture: what one training step computes, and nothing about the loop.

One step: teacher forward on the unmasked global crops (reading out only the attention the
mask strategies and the contrastive term need) -> masks -> student forward on the masked
global crops and the local crops -> weighted loss terms. After the optimiser step the
teacher follows the student by EMA (:meth:`IBOTMetaArch.update_teacher`). The training loop
(``train/loop.py``) drives it through :class:`mimkit.train.method.Method` and knows nothing of
teachers, masks or prototypes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mimkit.data.crops import Crops
from mimkit.errors import CheckpointError
from mimkit.ibot.config import PretrainConfig
from mimkit.ibot.mask_planner import StepMaskPlanner, contrastive_score, score_head_kinds
from mimkit.ibot.schedules import Schedules
from mimkit.losses import DenseContrastiveLoss, IBOTLoss, KoLeoLoss, image_slots, masked_patches
from mimkit.losses.loss_prediction import loss_prediction_terms
from mimkit.losses.mask_policy import MaskPolicyObjective
from mimkit.masking import MaskGenerator, MaskPlan, ScoreSpec, parse_strategies, readout_request
from mimkit.models import CLS_ROWS, backbone_spec, build_backbone
from mimkit.models.head import IBOTHead
from mimkit.models.network import IBOTNetwork, TeacherOutput
from mimkit.models.score_heads import build_score_heads
from mimkit.train import checkpoint as ckpt
from mimkit.train.compile import compile_blocks
from mimkit.train.method import Batch, StepOutput
from mimkit.train.optim import param_groups
from mimkit.weights import load_backbone

# What a resumed run may change: how it runs, not what it computes. The seed may not change
# (it is the data order and every draw). More epochs stretch the schedules from there on.
RESUMABLE = ("run.", "data.num_workers", "data.val_dataset", "optim.epochs")
NOT_RESUMABLE = ("run.seed",)  # (run.allow_changes takes any other change on purpose)


def build_network(
    cfg: PretrainConfig, drop_path: float, score_kinds: Sequence[str] = ()
) -> IBOTNetwork:
    """Backbone, projection head and the learned mask scores' heads ``score_kinds``."""
    m = cfg.model
    spec = backbone_spec(m.arch, m.img_size, m.patch_size)
    backbone = build_backbone(spec, drop_path, pos_interpolation=m.pos_interpolation)
    head = IBOTHead(
        backbone.embed_dim,
        m.out_dim,
        m.patch_out_dim,
        hidden_dim=m.head_hidden_dim,
        bottleneck_dim=m.head_bottleneck_dim,
        layers=m.head_layers,
        shared_head=m.shared_head,
        norm_last_layer=m.norm_last_layer,
    )
    detached = ("pred",) if cfg.loss.pred_grad == "head" else ()
    heads = build_score_heads(score_kinds, backbone.embed_dim, detached)
    return IBOTNetwork(backbone, head, heads)


def policy_scores(student: IBOTNetwork, teacher_out: TeacherOutput) -> Tensor:
    """The adversarial mask policy's logits ``[G*B, N]``: the student's ``adv`` head on the
    teacher's patch tokens, added to the readout as ``patch_scores["adv"]``."""
    logits = student.score_heads["adv"](teacher_out.patch_tokens)
    teacher_out.readout.patch_scores["adv"] = logits
    return logits


@dataclass
class StepLosses:
    loss: Tensor
    terms: dict[str, Tensor]  # detached: cls, patch and (when on) contrastive
    masks: Tensor  # [G*B, N] bool
    teacher_cls: Tensor  # [G*B, K]
    student_cls: Tensor  # [V*B, K]


class IBOTMetaArch(nn.Module):
    """Student and teacher networks, the mask generator and the weighted loss terms."""

    name = "pretrain"
    progress_keys = ("cls", "patch", "contrastive", "koleo", "pred_rho", "adv_entropy", "adv_iou")

    def __init__(
        self, cfg: PretrainConfig, schedules: Schedules, device: torch.device, rank: int = 0
    ) -> None:
        super().__init__()
        self.cfg, self.schedules, self.device = cfg, schedules, device
        self.num_global = cfg.data.global_crops
        torch.manual_seed(cfg.run.seed)  # same initial weights for the same seed
        kinds = score_head_kinds(cfg)
        self.student = build_network(cfg, cfg.model.drop_path_rate, kinds).to(device)
        if cfg.run.init:
            # Same layout checks as evaluation: a file that does not fully match is refused.
            load_backbone(cfg.run.init, self.student.backbone, cfg.run.init_key)
        self.teacher = build_network(cfg, 0.0, kinds).to(device)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        for network in (self.student, self.teacher):
            compile_blocks(network, cfg.run.compile)
        depth = self.student.backbone.depth
        self.grid = self.student.backbone.grid_size()
        self.steps_done = 0  # the optimiser steps taken (progress of the schedules)
        strategies = parse_strategies(cfg.masking.strategies, self.num_global, depth)
        self.masker = MaskGenerator(strategies, cfg.masking, depth)
        self.planner = StepMaskPlanner(
            self.masker, self.grid, cfg.run.seed, rank, schedules.steps_per_epoch,
            cfg.masking.start_epoch, schedules.total_steps,
        )  # fmt: skip
        self.koleo = KoLeoLoss() if cfg.loss.koleo > 0 else None
        self.contrastive: DenseContrastiveLoss | None = None
        self.contrastive_score = contrastive_score(cfg, strategies, depth)
        if cfg.loss.lambda3 > 0:
            self.contrastive = DenseContrastiveLoss(
                k=cfg.loss.contrastive_k, temperature=cfg.loss.contrastive_tau
            )
        # Scores are read once from one teacher forward: the union of what masks and the
        # contrastive term need.
        masks_need = self.masker.readout_request()
        self.request = readout_request([self.contrastive_score], depth, masks_need)
        self.policy: MaskPolicyObjective | None = None
        if "adv" in kinds:
            # Its IoU with AttMask-High needs the last block's CLS attention, where there is one.
            iou = ScoreSpec("raw", (depth - 1,))
            iou = iou if CLS_ROWS in self.student.backbone.readouts else None
            self.request = readout_request([iou], depth, self.request)
            self.adv_lambda = cfg.loss.adv_lambda_ramp()
            self.policy = MaskPolicyObjective(
                self.masker.strategies, cfg.loss.adv_estimator, cfg.loss.adv_entropy, iou
            )
        # The student's forward takes every view at once, so DDP sees one forward per backward.
        self.student_views: nn.Module = self.student
        self.loss = IBOTLoss(
            cfg.model.out_dim,
            cfg.model.patch_out_dim,
            self.num_global,
            student_temp=cfg.loss.student_temp,
            center_momentum=cfg.loss.center_momentum,
            lambda1=cfg.loss.lambda1,
            lambda2=cfg.loss.lambda2,
        ).to(device)
        self._s_params = [p for _, p in sorted(self.student.named_parameters())]
        self._t_params = [p for _, p in sorted(self.teacher.named_parameters())]

    # -- what the loop uses -------------------------------------------------------------
    def trainable(self) -> nn.Module:
        return self.student

    def param_groups(self) -> list[dict[str, Any]]:
        return param_groups(self.student, self.cfg.optim.decay_tokens)

    def eval_backbone(self) -> nn.Module:
        """The backbone evaluation hooks (online k-NN) measure: the teacher's."""
        return self.teacher.backbone

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Wrap the student's forward (e.g. in DDP), then restart the teacher from it."""
        self.student_views = wrap(self.student_views)
        # DDP broadcast rank 0's initial weights; the teacher starts from them too.
        self.teacher.load_state_dict(self.student.state_dict())

    def train(self, mode: bool = True) -> IBOTMetaArch:
        super().train(mode)
        self.teacher.eval()  # the teacher never trains: no drop path, ever
        return self

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "loss": self.loss.state_dict(),
        }

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.steps_done = int(state.get("step", 0))
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.loss.load_state_dict(state["loss"])

    def identity(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    def check_resumable(self, state: dict[str, Any], path: Path) -> None:
        saved = state.get("config")
        if not isinstance(saved, dict):
            raise CheckpointError(f"{path} is not a mimkit pretraining checkpoint")
        found = ckpt.changes(
            saved, self.cfg.to_dict(), PretrainConfig().to_dict(), RESUMABLE, NOT_RESUMABLE
        )
        allowed = "only run.* but the seed, data.num_workers and optim.epochs may change"
        ckpt.check_resumed_settings(path, found, allowed, self.cfg.run.allow_changes)

    def end_epoch(self, epoch: int, step: int, record: dict[str, float]) -> None:
        """(Nothing: pretraining's epoch records are the engine's log.)"""

    def batch_extras(self) -> StepMaskPlanner:
        """The loader workers draw each step's :class:`~mimkit.masking.MaskPlan`."""
        return self.planner

    # -- one step -----------------------------------------------------------------------
    def train_step(self, batch: Batch, step: int, seed: int) -> StepOutput:
        """Forward of one batch (``batch.crops``: global crops then local ones, each
        ``[B, ...]``).

        ``seed`` is the loop's step seed; ``batch.extras`` the step's mask plan from the
        loader workers (drawn here when ``None``: the same plan, from the masks' own stream
        derived from the same seed; see :mod:`mimkit.ibot.mask_planner`).
        """
        views = Crops.from_list(batch.crops, self.num_global, self.device)
        b = views.layout.batch_size
        t_temp, tp_temp = self.schedules.teacher_temps(step)
        plan = batch.extras if batch.extras is not None else self.planner(step, b)
        out = self.losses(views, t_temp, tp_temp, plan, step / self.schedules.total_steps)
        with torch.no_grad():
            t_assign = out.teacher_cls.argmax(-1)
            stats = {k: v.float() for k, v in out.terms.items()}
            stats["mask_ratio"] = out.masks.float().mean()
            g = views.layout.num_global
            stats["agreement"] = (t_assign == out.student_cls[: g * b].argmax(-1)).float().mean()
        scalars = {
            "momentum": self.schedules.momentum(step),
            "teacher_temp": t_temp,
            "teacher_patch_temp": tp_temp,
        }
        if self.policy is not None:
            scalars["adv_lambda"] = self.adv_lambda.at(step / self.schedules.total_steps)
        return StepOutput(out.loss, stats, scalars, t_assign[views.layout.rows(0)])

    def losses(
        self,
        views: Crops,
        teacher_temp: float,
        teacher_patch_temp: float,
        masks: MaskPlan | Tensor,
        progress: float = 0.0,
    ) -> StepLosses:
        """Teacher forward, masks (finished from a plan, or given as ``[G*B, N]``), student
        forward and the weighted loss terms. The heads run only on the tokens the terms read
        (see :mod:`mimkit.models.network`). ``progress``: of training, in [0, 1] (the
        adversarial policy's lambda)."""
        b = views.layout.batch_size
        teacher_out = self.teacher.encode(views.global_views, self.request)
        total = width = keys = logits = None
        if self.policy is not None:  # the policy learns on the teacher's detached tokens
            logits = policy_scores(self.student, teacher_out)
        if isinstance(masks, MaskPlan):
            total = masks.total  # known on the host: gathering the rows needs no sync
            width, keys = masks.widest, masks.keys
            masks = self.masker.complete(
                masks, teacher_out.readout, b, self.grid, self.device
            )
            masks = torch.cat(masks)
        masks = masks.flatten(1)
        picked = masked_patches(masks, total)
        student_masks = masks
        if self.policy is not None:
            lam = self.adv_lambda.at(progress)
            student_masks = self.policy.student_masks(masks, logits, keys, b, lam)
        embed_rows = None
        if self.contrastive is not None:
            scores = torch.stack(
                [
                    self.masker.scores(teacher_out.readout, c, b, self.contrastive_score)
                    for c in range(self.num_global)
                ]
            )
            embed_rows = torch.cat(self.contrastive.rows(scores))
        student = self.student_views(
            views.global_views, student_masks, views.local_views, picked.rows, embed_rows
        )
        with torch.no_grad():
            t_patch = self.teacher.head.patch_layer(teacher_out.patch_embed[picked.rows])
        terms = self.loss(
            student.cls_logits,
            teacher_out.cls_logits,
            student.patch_logits,
            t_patch,
            picked.weight,
            teacher_out.patch_mean_logits,
            teacher_temp,
            teacher_patch_temp,
        )
        loss, patch_ce = terms.pop("loss"), terms.pop("patch_ce")
        if student.predicted_loss is not None or self.policy is not None:
            slots = image_slots(picked.rows, masks.shape[1], masks.sum(1), width)
        if student.predicted_loss is not None:
            scores = teacher_out.readout.patch_scores["pred"]
            pred, stats = loss_prediction_terms(student.predicted_loss, patch_ce, scores, slots)
            loss = loss + self.cfg.loss.pred_weight * pred
            terms.update(stats)
        if self.policy is not None:
            adv, stats = self.policy(
                logits, masks, keys, b, lam, patch_ce, slots, teacher_out.readout
            )
            loss = loss + adv
            terms.update(stats)
        if self.contrastive is not None:
            pos, neg = student.patch_embed.reshape(2, b, -1, student.patch_embed.shape[-1])
            con = self.contrastive.pairs(pos, neg)
            loss = loss + self.cfg.loss.lambda3 * con
            terms["contrastive"] = con.detach()
        if self.koleo is not None:
            # Per global crop, as DINOv2: neighbours are searched within one crop's batch.
            ko = sum(self.koleo(c) for c in student.global_cls.chunk(self.num_global))
            loss = loss + self.cfg.loss.koleo * ko
            terms["koleo"] = ko.detach()
        return StepLosses(loss, terms, masks, teacher_out.cls_logits, student.cls_logits)

    def before_optimizer_step(self, step: int) -> None:
        """iBOT keeps the prototypes still for the first ``optim.freeze_last_layer`` epochs."""
        if self.schedules.epoch_of(step) < self.cfg.optim.freeze_last_layer:
            for p in self.student.head.last_layer_parameters():
                p.grad = None

    def after_optimizer_step(self, step: int) -> None:
        self.update_teacher(step)
        self.steps_done = step + 1

    @property
    def progress(self) -> float:
        """How far training has come, in [0, 1] (the schedules' ``mix`` alpha reads it)."""
        return min(self.steps_done / max(self.schedules.total_steps, 1), 1.0)

    @torch.no_grad()
    def update_teacher(self, step: int) -> None:
        """EMA: ``teacher = m * teacher + (1 - m) * student``."""
        m = self.schedules.momentum(step)
        torch._foreach_mul_(self._t_params, m)
        torch._foreach_add_(self._t_params, self._s_params, alpha=1 - m)
