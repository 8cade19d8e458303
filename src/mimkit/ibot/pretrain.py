"""Run pretraining: the one entry point ``mimkit pretrain``, ``mimkit compare`` and the tests
use. It validates the config, builds the data, the iBOT meta-architecture and the loop,
trains (resuming when there is a checkpoint) and returns a :class:`PretrainResult`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mimkit.errors import NonFiniteLossError
from mimkit.evaluate.online import OnlineKnnHook
from mimkit.ibot.config import PretrainConfig
from mimkit.ibot.data import build_train_data
from mimkit.ibot.mask_diagnostics import MaskDiagnosticsHook
from mimkit.ibot.meta_arch import IBOTMetaArch
from mimkit.ibot.schedules import Schedules
from mimkit.ibot.validation import validate_config
from mimkit.train import checkpoint as ckpt
from mimkit.train.distributed import start_process
from mimkit.train.loop import LoopSettings, TrainLoop
from mimkit.train.session import lock_output_dir

FINAL_KNN_FILE = "knn_final.json"


@dataclass
class PretrainResult:
    # finished, max_steps, stopped (signal), non_finite (loss; last good state kept),
    # interrupted (a second signal, or one outside the steps: the last checkpoint is intact)
    # or knn_interrupted (training finished and saved, the final k-NN did not run to the end)
    status: str
    step: int | None  # the step the checkpoint holds (None: non_finite before any save)
    steps_per_epoch: int
    output_dir: Path
    is_main: bool  # this process writes files and prints
    knn: dict[str, float] | None = None  # the final k-NN, when it ran
    error: str | None = None

    @property
    def checkpoint(self) -> Path:
        return self.output_dir / ckpt.LATEST


def build_schedules(cfg: PretrainConfig, steps_per_epoch: int, world_size: int) -> Schedules:
    o, lo = cfg.optim, cfg.loss
    return Schedules(
        steps_per_epoch=steps_per_epoch,
        epochs=o.epochs,
        lr=o.lr * (o.batch_size * world_size) / 256,
        min_lr=o.min_lr,
        warmup_epochs=o.warmup_epochs,
        weight_decay=o.weight_decay,
        weight_decay_end=o.weight_decay_end,
        momentum_teacher=o.momentum_teacher,
        teacher_temp=lo.teacher_temp,
        warmup_teacher_temp=lo.warmup_teacher_temp,
        teacher_patch_temp=lo.teacher_patch_temp,
        warmup_teacher_patch_temp=lo.warmup_teacher_patch_temp,
        warmup_teacher_temp_epochs=lo.warmup_teacher_temp_epochs,
        lr_warmup=o.lr_warmup,
        teacher_temp_warmup=lo.teacher_temp_warmup,
        mask_start_epoch=cfg.masking.start_epoch,
    )


def knn_hook(cfg: PretrainConfig) -> OnlineKnnHook:
    d = cfg.data
    return OnlineKnnHook(
        d.dataset, d.val_dataset, d.subset, cfg.model.img_size, cfg.run.knn_every_epochs
    )


def build_pretraining(
    cfg: PretrainConfig, resume: bool = True, resume_from: str | Path | None = None
) -> TrainLoop:
    """Everything checked first, then built: ``resume`` continues from the output folder's
    checkpoint (else refuses to overwrite it), ``resume_from`` from that file instead."""
    validate_config(cfg)
    source = ckpt.resume_source(cfg.run.output_dir, resume, resume_from)
    dist, device = start_process(cfg.run.device, cfg.run.threads)
    lock = lock_output_dir(Path(cfg.run.output_dir), dist)
    try:
        data = build_train_data(cfg, dist)
        schedules = build_schedules(cfg, data.steps_per_epoch, dist.world_size)
        method = IBOTMetaArch(cfg, schedules, device, dist.rank)
        data.extras = method.batch_extras()  # masks that need no teacher, drawn by the workers
        hooks = [knn_hook(cfg), MaskDiagnosticsHook(cfg, cfg.run.diagnostics_every_epochs)]
        o = cfg.optim
        settings = LoopSettings(
            cfg.run, Path(cfg.run.output_dir), o.epochs, o.clip_grad, o.clip_mode, cfg.to_dict()
        )
        return TrainLoop(settings, method, data, schedules, dist, device, hooks, source, lock)
    except BaseException:
        lock.release(unused=True)  # refused before writing anything: no trace left
        raise


def run_pretraining(
    cfg: PretrainConfig,
    *,
    resume: bool = True,
    resume_from: str | Path | None = None,
    on_start: Callable[[TrainLoop], None] | None = None,
) -> PretrainResult:
    """Train to the end (or ``run.max_steps``, or a stop signal), then, when finished and
    ``run.final_knn`` is set, k-NN of the teacher into ``knn_final.json``."""
    loop = build_pretraining(cfg, resume, resume_from)
    main = loop.dist.is_main
    try:
        if on_start is not None:
            on_start(loop)
        try:
            fit = loop.fit()
        except NonFiniteLossError as err:
            return PretrainResult(
                "non_finite", loop.last_saved, loop.steps_per_epoch, loop.out, main, error=str(err)
            )
        except KeyboardInterrupt:  # saves are atomic: the last checkpoint is whole
            return PretrainResult(
                "interrupted", loop.last_saved, loop.steps_per_epoch, loop.out, main
            )
        result = PretrainResult(fit.status, fit.step, loop.steps_per_epoch, loop.out, main)
        if fit.status == "finished" and cfg.run.final_knn:
            try:
                result.knn = loop.run_hook(knn_hook(cfg)) or None
            except KeyboardInterrupt:
                result.status = "knn_interrupted"
                return result
            if main and result.knn:
                (loop.out / FINAL_KNN_FILE).write_text(json.dumps(result.knn, indent=2))
        return result
    finally:
        loop.close()
