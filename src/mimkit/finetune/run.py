"""Run fine-tuning: the one entry point ``mimkit finetune``, ``mimkit compare`` and the tests
use. Every check first (config, data splits, the --init file, a checkpoint to resume), then
the classifier method on the training engine; trains and writes ``finetune.json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimkit.errors import ConfigError
from mimkit.finetune.baseline import frozen_knn
from mimkit.finetune.config import RANDOM_INIT, FinetuneConfig
from mimkit.finetune.data import build_data, validate_data
from mimkit.finetune.method import ClassifierMethod, ValAccuracyHook, finetune_schedule
from mimkit.finetune.model import build_classifier, read_init
from mimkit.finetune.results import FinetuneReport, write_results
from mimkit.train import checkpoint as ckpt
from mimkit.train.compile import compile_blocks
from mimkit.train.data import TrainData
from mimkit.train.distributed import start_process
from mimkit.train.loop import LoopSettings, TrainLoop
from mimkit.train.sampling import EpochSampler
from mimkit.train.session import lock_output_dir


def default_output_dir(cfg: FinetuneConfig) -> Path:
    """``<folder of the --init file>/finetune`` (``runs/finetune_random`` from scratch), with
    ``_subset<S>`` appended for a low-label run, so that runs do not collide."""
    init = cfg.run.init
    base = Path("runs/finetune_random") if init == RANDOM_INIT else Path(init).parent / "finetune"
    subset = cfg.data.subset
    return base.with_name(f"{base.name}_subset{subset:g}") if subset is not None else base


@dataclass
class FinetuneResult:
    status: str  # finished, max_steps or stopped
    step: int
    output_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    frozen_knn: dict[str, float] | None = None  # the starting backbone's, on the same splits


def build_finetuning(
    cfg: FinetuneConfig, resume: bool = True, resume_from: str | Path | None = None
) -> TrainLoop:
    """Everything checked first, then built: ``resume`` continues from the output folder's
    checkpoint (else refuses to overwrite it), ``resume_from`` from that file instead."""
    cfg.check()
    validate_data(cfg)
    out = Path(cfg.run.output_dir) if cfg.run.output_dir else default_output_dir(cfg)
    source = ckpt.resume_source(out, resume, resume_from)
    dist, device = start_process(cfg.run.device, cfg.run.threads)
    init = read_init(cfg)
    data = build_data(cfg, int(init.description["img_size"]), dist.rank)
    o = cfg.optim
    try:
        sampler = EpochSampler(len(data.views), o.batch_size, cfg.run.seed, dist.rank,
                               dist.world_size)  # fmt: skip
    except ValueError as err:
        raise ConfigError(f"{err} (lower --batch-size or take a larger --subset)") from None
    train = TrainData(data.train, data.views, sampler, o.batch_size, cfg.data.num_workers)
    # Every check passed: from here on this run owns the output folder.
    lock = lock_output_dir(out, dist)
    try:
        model, notes = build_classifier(init, data.num_classes, cfg)
        compile_blocks(model.backbone, cfg.run.compile)
        schedule = finetune_schedule(cfg, train.steps_per_epoch, dist.world_size)
        report = FinetuneReport(
            output_dir=out,
            init=init.source,
            checkpoint_key=cfg.run.init_key if init.state is not None else None,
            model=init.description,
            data=cfg.data.dataset,
            val_data=cfg.data.val_dataset or cfg.data.dataset,
            subset=cfg.data.subset,
            val_subset=cfg.data.val_subset,
            num_train=len(data.train),
            num_val=len(data.val),
            num_classes=data.num_classes,
            epochs=o.epochs,
            device=str(device),
            world_size=dist.world_size,
            notes=notes,
            config=cfg.to_dict(),
        )
        method = ClassifierMethod(cfg, model, init, data, schedule, report, dist, device)
        settings = LoopSettings(cfg.run, out, o.epochs, o.clip_grad, "global", cfg.to_dict())
        hooks = [ValAccuracyHook()]
        return TrainLoop(settings, method, train, schedule, dist, device, hooks, source, lock)
    except BaseException:
        lock.release(unused=True)  # refused before writing anything: no trace left
        raise


def run_finetuning(loop: TrainLoop) -> FinetuneResult:
    """Train ``loop`` (from :func:`build_finetuning`) to its end; write ``finetune.json``."""
    method: ClassifierMethod = loop.method  # type: ignore[assignment]
    fit = loop.fit()
    knn = None
    if loop.dist.is_main and method.history:
        if method.cfg.run.frozen_knn and fit.status == "finished":
            knn = frozen_knn(method.cfg, method.init, method.data, loop.device)
        write_results(method.report, method.history, fit.status, loop.elapsed, knn)
    return FinetuneResult(fit.status, fit.step, loop.out, list(method.history), knn)


def finetune(
    cfg: FinetuneConfig, resume: bool = True, resume_from: str | Path | None = None
) -> FinetuneResult:
    """Fine-tune as ``cfg`` says; return how it ended (status, step, output folder, history)."""
    loop = build_finetuning(cfg, resume=resume, resume_from=resume_from)
    try:
        return run_finetuning(loop)
    finally:
        loop.close()
