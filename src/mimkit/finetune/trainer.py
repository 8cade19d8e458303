"""The fine-tuning loop: AdamW with layer-wise LR decay, warm-up + cosine, drop path, label
smoothing, Mixup/CutMix, evaluation on the val split after every epoch, atomic checkpoints
with exact resume, Ctrl-C to stop, DDP under torchrun and AMP on CUDA.

Resume is exact: the data order and every image's augmentation are functions of (seed,
epoch, index), and each step's drop-path and Mixup draws are seeded by (seed, step, rank).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mimkit import __version__
from mimkit.errors import CheckpointError, ConfigError, NonFiniteLossError
from mimkit.evaluate.linear import accuracy_counts, accuracy_percent
from mimkit.finetune.config import RANDOM_INIT, FinetuneConfig
from mimkit.finetune.data import build_data, val_shard, validate_data
from mimkit.finetune.model import build_classifier, read_init, weight_average
from mimkit.finetune.optim import layer_decay_groups, set_learning_rate
from mimkit.finetune.results import best_epoch, write_results
from mimkit.finetune.resume import CHECKPOINT_KIND, read_resumable
from mimkit.train import checkpoint as ckpt
from mimkit.train.amp import amp_dtype, autocast
from mimkit.train.data import TrainData
from mimkit.train.distributed import DistInfo, barrier, start_process
from mimkit.train.logging import RunLogger
from mimkit.train.optim import adamw, clip_gradients
from mimkit.train.pretrain import lock_output_dir
from mimkit.train.sampling import EpochSampler, mix_seed
from mimkit.train.schedules import cosine
from mimkit.train.signals import StopFlag, saving_notice


def default_output_dir(cfg: FinetuneConfig) -> Path:
    """``<folder of the --init file>/finetune`` (``runs/finetune_random`` from scratch), with
    ``_subset<S>`` appended for a low-label run, so that runs do not collide."""
    init = cfg.run.init
    base = Path("runs/finetune_random") if init == RANDOM_INIT else Path(init).parent / "finetune"
    subset = cfg.data.subset
    return base.with_name(f"{base.name}_subset{subset:g}") if subset is not None else base


class Finetuner:
    def __init__(
        self, cfg: FinetuneConfig, resume: bool = True, resume_from: str | Path | None = None
    ) -> None:
        """``resume``: continue from ``output_dir/checkpoint.pth`` when there is one (else
        refuse to overwrite it); ``resume_from``: continue from that checkpoint file."""
        cfg.check()
        validate_data(cfg)
        self.cfg = cfg
        self.out = Path(cfg.run.output_dir) if cfg.run.output_dir else default_output_dir(cfg)
        source = ckpt.resume_source(self.out, resume, resume_from)
        self.dist: DistInfo
        self.dist, self.device = start_process(cfg.run.device, cfg.run.threads)
        self.init = read_init(cfg)
        self.model_description = self.init.description
        saved = None
        if source is not None:
            saved = read_resumable(
                source, self.model_description, self.init.source, cfg, self.dist.world_size
            )
        self.data = build_data(cfg, int(self.model_description["img_size"]), self.dist.rank)
        self.train_data = self._train_data()
        # Every check passed: from here on this run owns the output folder.
        self.lock = lock_output_dir(self.out, self.dist)
        try:
            self.model, self.notes = build_classifier(self.init, self.data.num_classes, cfg)
            self.model.to(self.device)
            self._build_training()
            self.start_step, self.history, self.elapsed = 0, [], 0.0
            self._epoch_sums = {"loss": 0.0, "steps": 0, "seconds": 0.0}
            self._saved_step: int | None = None
            if saved is not None:
                self._restore(saved, source)
            self.logger = RunLogger(self.out, self.dist.is_main, cfg.run.tensorboard)
            self.logger.truncate_after(self.start_step)
        except BaseException:
            self.lock.release()
            raise
        self.stop = StopFlag()

    def close(self) -> None:
        """End of the run: close the logs and free the output folder for the next run."""
        self.logger.close()
        self.lock.release()

    # -- construction -------------------------------------------------------------------
    def _train_data(self) -> TrainData:
        cfg, o, d = self.cfg, self.cfg.optim, self.data
        try:
            sampler = EpochSampler(
                len(d.views), o.batch_size, cfg.run.seed, self.dist.rank, self.dist.world_size
            )
        except ValueError as err:
            raise ConfigError(f"{err} (lower --batch-size or take a larger --subset)") from None
        return TrainData(d.train, d.views, sampler, o.batch_size, cfg.data.num_workers)

    def _build_training(self) -> None:
        cfg, o = self.cfg, self.cfg.optim
        self.steps_per_epoch = self.train_data.steps_per_epoch
        self.total_steps = self.steps_per_epoch * o.epochs
        self.optimizer = adamw(
            layer_decay_groups(self.model, o.weight_decay, o.layer_decay), self.device
        )
        self.peak_lr = o.lr * o.batch_size * self.dist.world_size / 256
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        self.mixup = self._build_mixup()
        self.ema = weight_average(self.model, o.ema)
        self.amp_dtype = amp_dtype(cfg.run.amp, self.device)
        fp16 = self.amp_dtype is torch.float16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)

    def _build_mixup(self):
        a = self.cfg.augment
        if not a.mixing:
            return None
        from timm.data import Mixup  # optional dependency: FinetuneConfig.check says so

        return Mixup(
            mixup_alpha=a.mixup,
            cutmix_alpha=a.cutmix,
            prob=a.mix_prob,
            switch_prob=a.switch_prob,
            mode="batch",
            label_smoothing=a.label_smoothing,
            num_classes=self.data.num_classes,
        )

    def learning_rate(self, step: int) -> float:
        warm = int(self.cfg.optim.warmup_epochs * self.steps_per_epoch)
        return cosine(step, self.total_steps, self.peak_lr, self.cfg.optim.min_lr, warm)

    # -- checkpoints --------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {"model": self.model_description, "finetune": self.cfg.to_dict()}

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(
                f"{path} does not match this run: {err}".splitlines()[0]
            ) from None
        self.start_step = int(state["step"])
        if path.resolve() == (self.out / ckpt.LATEST).resolve():
            self._saved_step = self.start_step
        self.history = list(state.get("history", []))
        self.elapsed = float(state.get("elapsed", 0.0))
        self._epoch_sums = dict(state.get("epoch_sums", self._epoch_sums))

    def state(self, step: int) -> dict[str, Any]:
        return {
            "kind": CHECKPOINT_KIND,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "step": step,
            "epoch": step // self.steps_per_epoch,
            "world_size": self.dist.world_size,
            "history": self.history,
            "epoch_sums": dict(self._epoch_sums),
            "elapsed": self.elapsed,
            "init": self.init.source,
            "num_classes": self.data.num_classes,
            "config": self._identity(),
            "mimkit_version": __version__,
        }

    def save(self, step: int) -> None:
        """Save the state after ``step`` steps, unless a weight is not finite: then the last
        checkpoint stays and NonFiniteLossError says which step it holds."""
        if not ckpt.all_finite(self.model.state_dict()):
            raise self._non_finite(f"non-finite weights after step {step}")
        if self.dist.is_main:
            ckpt.save_atomic(self.state(step), self.out / ckpt.LATEST)
        self._saved_step = step
        barrier()

    def _non_finite(self, what: str) -> NonFiniteLossError:
        step = self._saved_step
        kept = (
            f"{self.out / ckpt.LATEST} from step {step} is kept; lower the learning rate "
            "(--lr) and rerun to resume from it"
            if step is not None
            else "no checkpoint was saved before it; lower the learning rate (--lr) and rerun"
        )
        return NonFiniteLossError(f"{what}; {kept}")

    # -- one step -----------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.amp_dtype)

    def train_step(self, images: Tensor, labels: Tensor, step: int) -> float:
        set_learning_rate(self.optimizer, self.learning_rate(step))
        # Drop path and Mixup draw from streams seeded by (seed, step, rank): exact resume.
        seed = mix_seed(self.cfg.run.seed, step, self.dist.rank)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)  # timm's Mixup draws from numpy
        images = images.to(self.device, non_blocking=True)
        targets = labels.to(self.device, non_blocking=True)
        smoothing = self.cfg.augment.label_smoothing
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)  # soft targets, smoothing included
            smoothing = 0.0
        with self._autocast():
            logits = self.train_model(images)
        loss = nn.functional.cross_entropy(logits.float(), targets, label_smoothing=smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        # The gradient norm (clip_grad 0: measured, not clipped) for the finiteness check.
        grad_norm = clip_gradients(self.model.parameters(), self.cfg.optim.clip_grad, "global")
        # One host sync per step: the loss for the log and both finiteness checks.
        value, norm = torch.stack([loss.detach(), grad_norm.float().to(loss.device)]).tolist()
        if not math.isfinite(value):
            raise self._non_finite(f"non-finite loss {value} at step {step}")
        if not self.scaler.is_enabled() and not math.isfinite(norm):  # fp16: the scaler skips
            raise self._non_finite(f"non-finite gradient norm at step {step}")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return value

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Top-1/top-5 and loss on the whole val split, each process taking its share: of the
        weights' average when there is one."""
        model = self.ema.module if self.ema is not None else self.model
        model.eval()
        shard = val_shard(self.data.val, self.dist.rank, self.dist.world_size)
        loader = DataLoader(
            shard,
            batch_size=2 * self.cfg.optim.batch_size,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        batches = ((x.to(self.device), y.to(self.device)) for x, y in loader)
        with self._autocast():
            counts = accuracy_counts(model, batches).to(self.device)
        if self.dist.enabled:
            torch.distributed.all_reduce(counts)
        model.train()
        return accuracy_percent(counts, self.data.num_classes)

    # -- the loop -----------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to the end (or ``max_steps``, or a stop signal); return how it ended."""
        cfg = self.cfg
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        last = (
            self.total_steps
            if cfg.run.max_steps is None
            else min(self.total_steps, cfg.run.max_steps)
        )
        step, status = self.start_step, "ok"
        self.model.train()
        with self.stop.installed(saving_notice(self.dist.is_main)):
            while step < last and status == "ok":
                epoch, start_batch = divmod(step, self.steps_per_epoch)
                step, status = self._run_epoch(epoch, start_batch, last)
        if status == "ok":
            status = "finished" if step >= self.total_steps else "max_steps"
        if step != self._saved_step:
            self.save(step)
        if self.dist.is_main and self.history:
            write_results(self, status)
        return {"status": status, "step": step, "output_dir": str(self.out)}

    def _run_epoch(self, epoch: int, start_batch: int, last: int) -> tuple[int, str]:
        cfg = self.cfg
        step = epoch * self.steps_per_epoch + start_batch
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=start_batch,
            desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
            disable=not (self.dist.is_main and cfg.run.progress),
            unit="step",
            dynamic_ncols=True,
        )
        sums = self._epoch_sums
        status = "ok"
        t0 = started = time.perf_counter()
        loader = self.train_data.loader(epoch, start_batch, self.device.type == "cuda")
        for images, labels, _ in loader:  # (no per-batch extras here)
            if step >= last:
                break
            try:
                loss = self.train_step(images, labels, step)
            except NonFiniteLossError:
                bar.close()
                raise  # the step was not applied; the last checkpoint stays
            step += 1
            sums["loss"] += loss
            sums["steps"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if step % cfg.run.log_every_steps == 0:
                self.logger.log("step", step, {"loss": loss, "lr": self.learning_rate(step - 1)})
            if self.stop.requested:
                status = "stopped"
            if status == "stopped" or (
                cfg.run.save_every_steps and step % cfg.run.save_every_steps == 0
            ):
                self.elapsed += time.perf_counter() - t0
                t0 = time.perf_counter()
                self.save(step)
            if status == "stopped":
                break
        bar.close()
        self.elapsed += time.perf_counter() - t0
        sums["seconds"] = sums.get("seconds", 0.0) + time.perf_counter() - started
        if step == (epoch + 1) * self.steps_per_epoch:
            self._end_epoch(epoch, step)
        return step, status

    def _end_epoch(self, epoch: int, step: int) -> None:
        t0 = time.perf_counter()
        scores = self.evaluate()
        self.elapsed += time.perf_counter() - t0
        sums = self._epoch_sums
        images = sums["steps"] * self.cfg.optim.batch_size * self.dist.world_size
        record = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": sums["loss"] / max(sums["steps"], 1),
            "lr": self.learning_rate(step - 1),
            # Training only (evaluation and the epoch's save excluded), as pretraining's.
            "images_per_s": images / max(sums.get("seconds", 0.0), 1e-9),
            **{f"val_{k}": v for k, v in scores.items()},
            "elapsed": self.elapsed,
        }
        self.history.append(record)
        self._epoch_sums = {"loss": 0.0, "steps": 0, "seconds": 0.0}
        self.logger.log("epoch", step, {k: v for k, v in record.items() if k != "step"})
        self.save(step)
        if self.dist.is_main:
            write_results(self, "running")
            if self.cfg.run.progress:
                best = best_epoch(self.history)
                shown = ", ".join(
                    f"{k} {record[k]:.4g}"
                    for k in ("train_loss", "val_top1", "val_top5")
                    if k in record
                )
                tqdm.write(f"epoch {epoch + 1}: {shown} (best top-1 so far: epoch {best['epoch']})")


def finetune(
    cfg: FinetuneConfig, resume: bool = True, resume_from: str | Path | None = None
) -> dict[str, Any]:
    """Fine-tune as ``cfg`` says; return how it ended (status, step, output_dir)."""
    trainer = Finetuner(cfg, resume=resume, resume_from=resume_from)
    try:
        return trainer.fit()
    finally:
        trainer.close()
