"""Run pretraining: the one entry point ``mimkit pretrain``, ``mimkit compare`` and the tests
use. It validates the config, builds the data, the iBOT meta-architecture and the loop,
trains (resuming when there is a checkpoint) and returns a :class:`PretrainResult`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mimkit.data import validate_data_spec
from mimkit.devices import resolve_device
from mimkit.errors import MimkitError, MimkitWarning, NonFiniteLossError
from mimkit.evaluate.online import OnlineKnnHook
from mimkit.evaluate.reference import reference_knn
from mimkit.ibot.config import PretrainConfig
from mimkit.ibot.data import build_train_data
from mimkit.ibot.mask_diagnostics import MaskDiagnosticsHook
from mimkit.ibot.meta_arch import IBOTMetaArch
from mimkit.ibot.schedules import Schedules
from mimkit.ibot.validation import validate_config
from mimkit.models import build_vit
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


def knn_without_val_split(cfg: PretrainConfig) -> str | None:
    """Turn the online and final k-NN off when the training data has no val split (a plain
    folder of class folders, IDX files without t10k-*) and none is named: the run would
    otherwise stop at its first k-NN. Returns the note that says so (None: nothing changed).
    A named ``data.val_dataset`` that cannot be used is a DataError, before any work."""
    d, r = cfg.data, cfg.run
    if d.val_dataset:
        validate_data_spec(d.val_dataset, "val")
        return None
    if not (r.final_knn or r.knn_every_epochs):
        return None
    try:
        validate_data_spec(d.dataset, "train")
    except MimkitError:
        return None  # the data itself is refused later, with its own message
    try:
        validate_data_spec(d.dataset, "val")
    except MimkitError:
        r.final_knn, r.knn_every_epochs = False, 0
        return (
            f"{d.dataset} has no val split: no k-NN during or after training "
            "(--set data.val_dataset=DATA names one)"
        )
    return None


def knn_references(cfg: PretrainConfig, k: int) -> dict[str, float]:
    """Raw pixels' and this ViT's random weights' k-NN top-1 on the final k-NN's own split
    and protocol (what the figure means), cached beside the run; with the split sizes."""
    def random_backbone() -> nn.Module:
        torch.manual_seed(cfg.run.seed)  # the run's own initial weights
        return build_vit(cfg.model.arch, cfg.model.img_size, cfg.model.patch_size)

    train, val = knn_hook(cfg).datasets()
    key = {
        "data": cfg.data.dataset,
        "subset": cfg.data.subset,
        "model": [cfg.model.arch, cfg.model.img_size, cfg.model.patch_size],
        "seed": cfg.run.seed,
    }
    cache = Path(cfg.run.output_dir) / "reference_knn.json"
    device = resolve_device(cfg.run.device)
    ref = reference_knn(random_backbone, train, val, device, k=k, cache=cache, key=key)
    return {**ref, "num_train": len(train), "num_val": len(val)}


def build_pretraining(
    cfg: PretrainConfig, resume: bool = True, resume_from: str | Path | None = None
) -> TrainLoop:
    """Everything checked first, then built: ``resume`` continues from the output folder's
    checkpoint (else refuses to overwrite it), ``resume_from`` from that file instead."""
    validate_config(cfg)
    note = knn_without_val_split(cfg)
    if note:
        warnings.warn(note, MimkitWarning, stacklevel=2)
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
