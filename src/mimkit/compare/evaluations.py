"""What a grid measures on each run's checkpoints: one :class:`Evaluation` per ``eval:``
section entry (k-NN per feature set, low-shot k-NN, the linear probe, fine-tuning, the mask
diagnostics), each with the metrics it reports.

An evaluation runs on a checkpoint through an :class:`EvalContext`, which sets up the model
and the data once per checkpoint with :func:`mimkit.evaluate.prepare.prepare_eval` (the set-up
of ``mimkit knn`` and ``mimkit linear``, their feature cache included).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from mimkit.compare.launch import CompareInterrupted, RunFailed
from mimkit.compare.settings import EvalSettings
from mimkit.compare.spec import RunSpec, slugify
from mimkit.devices import resolve_device
from mimkit.evaluate import fewshot_knn, knn_evaluate, train_linear
from mimkit.evaluate.prepare import EvalSetup, prepare_eval
from mimkit.ibot import mask_diagnostics
from mimkit.weights.io import ModelSource

LOG_PREFIX = "masks_"  # the diagnostics hook's name in the epoch log
FEATURE_PREFIX = {"cls": "knn", "cls+avgpool": "knn_avgpool"}
FEATURE_TITLE = {"cls": "CLS", "cls+avgpool": "CLS + mean patch token"}
FEATURE_LABEL = {"cls": "", "cls+avgpool": " (CLS + mean patch)"}


@dataclass(frozen=True)
class Metric:
    """One number per run and evaluated epoch, as a column of results.csv."""

    column: str  # results.csv / summary.csv column
    label: str  # in tables and verdicts: "k-NN@20 top-1"
    evaluation: str  # the evaluation's name in eval.json
    key: str  # the value in that evaluation's results
    tested: bool = True  # compared with the baseline (accuracies); else only estimated
    headline: bool = False  # its own table and verdict in summary.md

    @property
    def short(self) -> str:
        """The label without "top-1": "k-NN@20", "5-shot k-NN", "linear"."""
        return self.label.replace(" top-1", "")


@dataclass
class EvalContext:
    """One checkpoint being evaluated: its model and data, set up on first use."""

    run: RunSpec
    epoch: int
    path: Path
    ev: EvalSettings
    log: dict[str, Any] = field(default_factory=dict)  # the epoch's record of log.jsonl
    _setup: EvalSetup | None = None

    @property
    def setup(self) -> EvalSetup:
        if self._setup is None:
            cfg = self.run.config
            on_gpu = resolve_device(cfg.run.device).type == "cuda"
            self._setup = prepare_eval(
                ModelSource(self.path, "teacher"),
                cfg.data.dataset,
                subset=cfg.data.subset,
                val_data=cfg.data.val_dataset,
                device=cfg.run.device,
                num_workers=cfg.data.num_workers if on_gpu else 0,  # as compare did before
            )
        return self._setup

    def features(self, split: str, mode: str) -> tuple[Tensor, Tensor]:
        s = self.setup
        name = s.train_split if split == "train" else s.val_split
        f, labels, _ = s.features(name, mode, "teacher", self.ev.knn.batch_size, False, False)
        return f, labels


@dataclass(frozen=True)
class Evaluation:
    name: str  # its key in eval.json
    title: str  # its section in summary.md
    settings: dict[str, Any]  # what its result depends on
    metrics: tuple[Metric, ...]
    compute: Callable[[EvalContext], dict[str, float]]
    final_only: bool = True
    selects: Callable[[RunSpec], bool] = lambda run: True

    def due(self, run: RunSpec, epoch: int) -> bool:
        return (not self.final_only or epoch == run.epochs) and self.selects(run)


# -- the evaluations --------------------------------------------------------------------
def _knn(ev: EvalSettings, mode: str) -> Evaluation:
    k = ev.knn
    prefix, title, tail = FEATURE_PREFIX[mode], FEATURE_TITLE[mode], FEATURE_LABEL[mode]

    def compute(ctx: EvalContext) -> dict[str, float]:
        (tr_f, tr_l), (va_f, va_l) = ctx.features("train", mode), ctx.features("val", mode)
        device = ctx.setup.device
        res = knn_evaluate(
            tr_f.to(device), tr_l, va_f.to(device), va_l, ks=k.ks, temperature=k.temperature
        )
        return {f"{which}_k{kk}": v for kk, r in res.items() for which, v in r.items()}

    metrics = tuple(
        Metric(f"{prefix}_{which}_k{kk}", f"k-NN@{kk} {which.replace('top', 'top-')}{tail}",
               f"knn:{mode}", f"{which}_k{kk}", tested=which == "top1",
               headline=which == "top1" and kk == k.shown_k)
        for kk in k.ks
        for which in ("top1", "top5")
    )  # fmt: skip
    return Evaluation(
        f"knn:{mode}", f"k-NN on {title}", k.settings_key(), metrics, compute, final_only=False
    )


def _fewshot(ev: EvalSettings) -> Evaluation:
    f = ev.fewshot

    def compute(ctx: EvalContext) -> dict[str, float]:
        (tr_f, tr_l), (va_f, va_l) = ctx.features("train", "cls"), ctx.features("val", "cls")
        device = ctx.setup.device
        # The seed picks the labelled images: the same ones for every strategy at a seed.
        res = fewshot_knn(
            tr_f.to(device), tr_l, va_f.to(device), va_l, shots=f.shots, draws=f.draws,
            k=f.k, temperature=ev.knn.temperature, seed=ctx.run.seed,
        )  # fmt: skip
        return {f"{key}_{s}shot": float(v) for s, r in res.items() for key, v in r.items()}

    metrics = tuple(
        Metric(f"fewshot_top1_{s}shot", f"{s}-shot k-NN top-1", "fewshot", f"top1_{s}shot",
               headline=True)
        for s in sorted(f.shots)
    )  # fmt: skip
    return Evaluation(
        "fewshot",
        f"Low-shot k-NN (CLS; {f.draws} draws of the labelled images, averaged)",
        f.settings_key(ev.knn.temperature),
        metrics,
        compute,
    )


def _linear(ev: EvalSettings) -> Evaluation:
    lin = ev.linear

    def compute(ctx: EvalContext) -> dict[str, float]:
        (tr_f, tr_l), (va_f, va_l) = (
            ctx.features("train", lin.features),
            ctx.features("val", lin.features),
        )
        res = train_linear(
            tr_f, tr_l, va_f, va_l, epochs=lin.epochs, batch_size=lin.batch_size, lr=lin.lr,
            device=ctx.setup.device, seed=ctx.run.seed, progress=False,
        )  # fmt: skip
        out = {
            "top1": res.final.get("val_top1"),
            "top5": res.final.get("val_top5"),
            "best_top1": res.best.get("val_top1"),
            "lr": res.lr,
        }
        return {k: float(v) for k, v in out.items() if v is not None}

    metrics = (
        Metric("linear_top1", "linear top-1", "linear", "top1", headline=True),
        Metric("linear_top5", "linear top-5", "linear", "top5", tested=False),
    )
    return Evaluation(
        "linear",
        f"Linear probe ({lin.features} features, {lin.epochs} epochs)",
        lin.settings_key(),
        metrics,
        compute,
        final_only=not lin.every,
    )


def finetune_output(run: RunSpec, recipe: str) -> Path:
    return run.out / f"finetune_{slugify(Path(recipe).stem)}"


def _finetune(ev: EvalSettings) -> Evaluation:
    ft = ev.finetune

    def compute(ctx: EvalContext) -> dict[str, float]:
        # Imported here: fine-tuning pulls in timm's Mixup, needed by this evaluation only.
        from mimkit.finetune import finetune, load_finetune_config
        from mimkit.finetune.results import RESULTS_NAME

        run = ctx.run.config.run
        out = finetune_output(ctx.run, ft.recipe)
        overrides = [
            ("run.init", str(ctx.path)),
            ("run.init_key", "teacher"),
            ("run.output_dir", str(out)),
            ("run.seed", ctx.run.seed),
            ("run.device", run.device),
            ("run.threads", run.threads),
            ("run.progress", False),
            ("run.tensorboard", False),
        ]
        result = finetune(load_finetune_config(ft.recipe, overrides))
        if result.status == "stopped":
            raise CompareInterrupted(f"stopped while fine-tuning {ctx.run.name}")
        if result.status != "finished":
            raise RunFailed(f"fine-tuning ended with status {result.status!r} in {out}")
        summary = json.loads((out / RESULTS_NAME).read_text())
        last, best = summary["last"], summary["best_optimistic"]
        values = {"top1": last.get("val_top1"), "top5": last.get("val_top5")}
        values["best_top1"] = best.get("val_top1")
        return {k: float(v) for k, v in values.items() if v is not None}

    metric = Metric("finetune_top1", "fine-tune top-1", "finetune", "top1", headline=True)
    return Evaluation(
        "finetune",
        f"Fine-tuning (recipe {ft.recipe}, last epoch)",
        ft.settings_key(),
        (metric,),
        compute,
        selects=lambda run: ft.selects(run.strategy.name, run.strategy.slug, run.seed),
    )


DIAGNOSTIC_LABELS = {
    "object_coverage": "object coverage",
    "object_chance": "object coverage by chance",
    "hardness": "hardness",
    "iou_high": "IoU with AttMask-High",
    "iou_chance": "IoU by chance",
    "attention_entropy": "attention entropy",
}


def _diagnostics(ev: EvalSettings) -> Evaluation:
    def compute(ctx: EvalContext) -> dict[str, float]:
        logged = {k.removeprefix(LOG_PREFIX): v for k, v in ctx.log.items()}
        if logged.get("version") == mask_diagnostics.DIAGNOSTICS_VERSION:
            return {k: float(logged.get(k, math.nan)) for k in mask_diagnostics.KEYS}
        cfg = ctx.run.config
        device = resolve_device(cfg.run.device)
        return mask_diagnostics.checkpoint_diagnostics(cfg, ctx.path, device)

    metrics = tuple(
        Metric(f"diag_{k}", DIAGNOSTIC_LABELS[k], "diagnostics", k, tested=False)
        for k in mask_diagnostics.KEYS
    )
    return Evaluation(
        "diagnostics",
        "Mask diagnostics",
        ev.diagnostics.settings_key(),
        metrics,
        compute,
        final_only=False,
    )


def evaluation_plan(ev: EvalSettings) -> list[Evaluation]:
    """The evaluations ``ev`` turns on, in the order of summary.md."""
    plan = [_knn(ev, mode) for mode in ev.knn.features]
    switched = (
        (ev.fewshot.enabled, _fewshot),
        (ev.linear.enabled, _linear),
        (ev.finetune.enabled, _finetune),
        (ev.diagnostics.enabled, _diagnostics),
    )
    return plan + [make(ev) for on, make in switched if on]


def all_metrics(plan: list[Evaluation]) -> list[Metric]:
    return [m for e in plan for m in e.metrics]
