"""The training loop: device, AMP, optimiser and its schedule, checkpoints, logs and signals.

It drives any :class:`~mimkit.train.method.Method` (iBOT's is ``train/meta_arch.py``) one
step at a time and knows nothing about what the method computes. Every step draws from
streams seeded by ``(seed, step, rank)`` and the data order is a pure function of
``(seed, epoch)``, so a run resumed anywhere replays the uninterrupted run exactly.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from mimkit import __version__
from mimkit.config import PretrainConfig
from mimkit.errors import CheckpointError, NonFiniteLossError
from mimkit.folder_lock import FolderLock
from mimkit.train import checkpoint as ckpt
from mimkit.train.amp import amp_dtype, autocast
from mimkit.train.data import TrainData, stop_on_data_error
from mimkit.train.distributed import DistInfo, barrier
from mimkit.train.epoch_stats import EpochStats
from mimkit.train.logging import RunLogger
from mimkit.train.method import EpochHook, Method
from mimkit.train.optim import build_optimizer, clip_gradients, set_hyperparameters
from mimkit.train.sampling import step_seed
from mimkit.train.schedules import Schedules
from mimkit.train.signals import StopFlag, saving_notice
from mimkit.train.waiting import WaitClock


@dataclass
class StepResult:
    values: dict[str, float]
    assign: Tensor | None  # the method's per-image clusters of the first crop, [B]


@dataclass
class FitResult:
    status: str  # finished, max_steps or stopped
    step: int


class TrainLoop:
    def __init__(
        self,
        cfg: PretrainConfig,
        method: Method,
        data: TrainData,
        schedules: Schedules,
        dist: DistInfo,
        device: torch.device,
        hooks: Sequence[EpochHook] = (),
        resume_from: Path | None = None,
        lock: FolderLock | None = None,
    ) -> None:
        self.cfg, self.method, self.data, self.schedules = cfg, method, data, schedules
        self.dist, self.device, self.hooks = dist, device, list(hooks)
        self.out = Path(cfg.run.output_dir)
        self.steps_per_epoch = data.steps_per_epoch
        if dist.enabled:
            ids = [device.index] if device.type == "cuda" else None
            method.distribute(lambda m: DistributedDataParallel(m, device_ids=ids))
        self.optimizer = build_optimizer(method.trainable(), device, cfg.optim.decay_tokens)
        self.amp_dtype = amp_dtype(cfg.run.amp, device)
        fp16 = self.amp_dtype is torch.float16 and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.lock = lock  # the output folder's, held until close()
        self.start_step = 0
        self.kept = ckpt.KeptCheckpoints(self.out, dist.is_main)
        self.last_saved: int | None = None  # the step OUTPUT_DIR/checkpoint.pth holds
        if resume_from is not None:
            self._load(resume_from)
            if resume_from.resolve() == self.kept.latest.resolve():
                self.last_saved = self.start_step
        self.logger = RunLogger(self.out, dist.is_main, cfg.run.tensorboard)
        self.logger.truncate_after(self.start_step)
        self.stop = StopFlag()

    # -- checkpoints --------------------------------------------------------------------
    def state(self, step: int) -> dict[str, Any]:
        return {
            **self.method.checkpoint_state(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": step,
            "epoch": step // self.steps_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.dist.world_size,
            "config": self.cfg.to_dict(),
            "mimkit_version": __version__,
        }

    def _load(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path, map_location=self.device)
        saved = state.get("config", {}).get("model")
        if saved is not None and not ckpt.same_model_config(saved, self.cfg):
            raise CheckpointError(
                f"{path} was trained with another model config ({saved}); "
                "use its config or another --output-dir"
            )
        ckpt.check_same_epochs(
            path, state, self.data.batch_size, self.dist.world_size, self.steps_per_epoch
        )
        try:
            self.method.load_checkpoint_state(state)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError) as err:
            msg = f"{path} does not match this run: {err}".splitlines()[0]
            raise CheckpointError(msg) from None
        self.start_step = int(state["step"])

    def save(self, step: int) -> Path:
        """Save the state after ``step`` steps, unless a weight is not finite: then the last
        checkpoint stays and NonFiniteLossError says which step it holds."""
        path = self.out / ckpt.LATEST
        # The same weights on every rank: all stop together.
        if not ckpt.all_finite(self.method.checkpoint_state()):
            raise self._non_finite(f"non-finite weights after step {step}")
        if self.dist.is_main:
            self.kept.save(self.state(step))
        self.last_saved = step
        barrier()
        return path

    # -- one step -----------------------------------------------------------------------
    def train_step(self, crops: list[Tensor], step: int, extras: Any = None) -> StepResult:
        """Forward, backward, optimiser step and the method's after-step update. ``extras``:
        what the loader workers computed for the method (``None``: the method does it)."""
        sched = self.schedules
        lr, wd = sched.learning_rate(step), sched.wd(step)
        set_hyperparameters(self.optimizer, lr, wd)
        seed = step_seed(self.cfg.run.seed, step, self.dist.rank)
        torch.manual_seed(seed)
        with autocast(self.device, self.amp_dtype):
            out = self.method.train_step(crops, step, seed, extras)
        stats = {"loss": out.loss.detach().float(), **out.stats}
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.unscale_(self.optimizer)
        # Frozen gradients go first, so that they never count towards clipping or the norm.
        self.method.before_optimizer_step(step)
        # The global gradient norm (clip_grad 0: measured, not clipped) for the finiteness check.
        o = self.cfg.optim
        stats["grad_norm"] = clip_gradients(
            self.method.trainable().parameters(), o.clip_grad, o.clip_mode
        )
        # One host sync per step, for the log and the finiteness checks together.
        values = dict(zip(stats, torch.stack(list(stats.values())).tolist(), strict=True))
        self._check_step_finite(values, step)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.after_optimizer_step(step)
        values.update(lr=lr, wd=wd, **out.scalars)
        return StepResult(values, out.assign)

    def _save_on_data_error(self, step: int) -> str:
        """Before a data error stops the run: save the state after ``step`` steps (alone:
        other processes cannot join a save now); what to add to the error."""
        if self.dist.enabled:
            return ""
        if step != self.last_saved:
            self.save(step)
        return f"; the state after step {step} is saved: rerun to resume"

    # -- non-finite values ----------------------------------------------------------------
    def _check_step_finite(self, values: dict[str, float], step: int) -> None:
        """Stop before applying a step whose loss or gradients are not finite. Under fp16 loss
        scaling, infinite gradients are the scaler's business (it skips the step)."""
        if not math.isfinite(values["loss"]):
            raise self._non_finite(f"non-finite loss {values['loss']} at step {step}", step)
        if not self.scaler.is_enabled() and not math.isfinite(values["grad_norm"]):
            raise self._non_finite(f"non-finite gradient norm at step {step}", step)

    def _non_finite(self, what: str, step: int | None = None) -> NonFiniteLossError:
        """The error for non-finite values met at ``step`` (None: while saving). When the
        checkpoint holds that very step's state, that state is what failed: roll back."""
        if step is not None and step == self.last_saved and self.dist.is_main:
            self.last_saved = self.kept.roll_back()  # (the message is the main process's)
        step = self.last_saved
        kept = (
            f"{self.kept.latest} from step {step} (epoch {step / self.steps_per_epoch:g}) "
            "is kept; lower the learning rate (--lr) and rerun to resume from it"
            if step is not None
            else "no checkpoint was saved before it; lower the learning rate (--lr) and rerun"
        )
        return NonFiniteLossError(f"{what}; {kept}")

    # -- the loop -----------------------------------------------------------------------
    def fit(self) -> FitResult:
        """Train to the end (or ``max_steps``, or a stop signal); return how it ended."""
        run = self.cfg.run
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            text = yaml.safe_dump(self.cfg.to_dict(), sort_keys=False)
            (self.out / "config.yaml").write_text(text)
        total = self.schedules.total_steps
        last = total if run.max_steps is None else min(total, run.max_steps)
        step, status = self.start_step, "ok"
        self.method.train()

        with self.stop.installed(saving_notice(self.dist.is_main)):
            while step < last and status == "ok":
                epoch, start_batch = divmod(step, self.steps_per_epoch)
                step, status = self._run_epoch(epoch, start_batch, last)
            if status == "ok":
                status = "finished" if step >= total else "max_steps"
            # Inside the handlers: a first Ctrl-C during this save lets it finish.
            if step != self.last_saved:
                self.save(step)
        return FitResult(status, step)

    def _run_epoch(self, epoch: int, start_batch: int, last: int) -> tuple[int, str]:
        run = self.cfg.run
        b = self.data.batch_size * self.dist.world_size
        step = epoch * self.steps_per_epoch + start_batch
        desc, shown = f"epoch {epoch + 1}/{self.cfg.optim.epochs}", run.progress
        bar = tqdm(total=self.steps_per_epoch, initial=start_batch, desc=desc, unit="step",
                   disable=not (shown and self.dist.is_main), dynamic_ncols=True)
        stats, status, t0 = EpochStats(), "ok", time.perf_counter()
        loader = self.data.loader(epoch, start_batch, pin_memory=self.device.type == "cuda")
        clock = WaitClock()
        # Only the batches this run takes: none is built for nothing past ``last``.
        batches = itertools.islice(loader, last - step)
        batches = stop_on_data_error(batches, step, self._save_on_data_error)
        for crops, label, extras in clock.iterate(batches):
            try:
                result = self.train_step(crops, step, extras)
            except NonFiniteLossError:
                bar.close()
                raise  # the last checkpoint known good stays (see _non_finite)
            if step == self.last_saved:
                self.kept.confirm()  # a finite step from the saved state: it is good
            step += 1
            stats.add(result.values, result.assign, label)
            ips = stats.count * b / max(time.perf_counter() - t0, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{result.values['loss']:.3f}", img_s=f"{ips:.0f}")
            if step % run.log_every_steps == 0:
                self.logger.log("step", step, {**result.values, "images_per_s": ips})
            if run.save_every_steps and step % run.save_every_steps == 0:
                self.save(step)
            if self.stop.requested:
                status = "stopped"
                break
        bar.close()
        if step != (epoch + 1) * self.steps_per_epoch:
            return step, status  # a part of an epoch has step records only, no epoch record
        means = stats.means()
        elapsed = max(time.perf_counter() - t0, 1e-9)
        means["images_per_s"] = stats.count * b / elapsed
        # The fraction of the epoch spent waiting for batches (loader start-up included).
        means["data_wait"] = clock.waited / elapsed
        self._end_epoch(epoch + 1, means)
        # "steps": how many steps the means cover (fewer when this epoch was resumed mid-way).
        self.logger.log("epoch", step, {"epoch": epoch + 1, "steps": stats.count, **means})
        if self.dist.is_main and run.progress:
            keys = ("loss", *self.method.progress_keys, "nmi", "knn_top1")
            shown = ", ".join(f"{k} {means[k]:.4g}" for k in keys if k in means)
            tqdm.write(f"epoch {epoch + 1}: {shown}")
        return step, status

    def _end_epoch(self, epoch: int, means: dict[str, float]) -> None:
        """A finished epoch: save, keep a copy every ``keep_every_epochs``, run due hooks."""
        self.save(epoch * self.steps_per_epoch)
        every = self.cfg.run.keep_every_epochs
        if self.dist.is_main and every and epoch % every == 0:
            ckpt.keep_copy(self.out / ckpt.LATEST, ckpt.epoch_checkpoint(epoch))
        for hook in self.hooks:
            if hook.due(epoch):
                means.update({f"{hook.name}_{k}": v for k, v in self.run_hook(hook).items()})

    def run_hook(self, hook: EpochHook) -> dict[str, float]:
        """``hook`` on the method, in the main process only."""
        result = hook(self.method, self.device) if self.dist.is_main else {}
        barrier()  # the other processes wait for it
        return result

    def close(self) -> None:
        """End of the run: close the logs and free the output folder for the next run."""
        self.logger.close()
        if self.lock is not None:
            self.lock.release()
