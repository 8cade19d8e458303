"""The training loop: device, AMP, optimiser and its schedule, checkpoints, logs and signals.

It drives any :class:`~mimkit.train.method.Method` (iBOT's is ``train/meta_arch.py``) one
step at a time and knows nothing about what the method computes. Every step draws from
streams seeded by ``(seed, step, rank)`` and the data order is a pure function of
``(seed, epoch)``, so a run resumed anywhere replays the uninterrupted run exactly.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from mimkit import __version__
from mimkit.config import PretrainConfig
from mimkit.errors import CheckpointError, MimkitError
from mimkit.train import checkpoint as ckpt
from mimkit.train.data import TrainData
from mimkit.train.distributed import DistInfo, barrier
from mimkit.train.logging import RunLogger
from mimkit.train.method import EpochHook, Method
from mimkit.train.metrics import ari, nmi
from mimkit.train.optim import build_optimizer, set_hyperparameters
from mimkit.train.sampling import mix_seed
from mimkit.train.schedules import Schedules
from mimkit.train.signals import StopFlag


class NonFiniteLossError(MimkitError):
    """The loss became NaN or infinite; the last good state was saved."""


@dataclass
class StepResult:
    values: dict[str, float]
    assign: Tensor | None  # the method's per-image clusters of the first crop, [B]


@dataclass
class FitResult:
    status: str  # finished, max_steps or stopped
    step: int


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """``run.amp`` as an autocast dtype: auto is bf16 on CUDA, none elsewhere."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


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
    ) -> None:
        self.cfg, self.method, self.data, self.schedules = cfg, method, data, schedules
        self.dist, self.device, self.hooks = dist, device, list(hooks)
        self.out = Path(cfg.run.output_dir)
        self.steps_per_epoch = data.steps_per_epoch
        if dist.enabled:
            ids = [device.index] if device.type == "cuda" else None
            method.distribute(lambda m: DistributedDataParallel(m, device_ids=ids))
        self.optimizer = build_optimizer(method.trainable())
        self.amp_dtype = amp_dtype(cfg.run.amp, device)
        fp16 = self.amp_dtype is torch.float16 and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.start_step = 0
        if resume_from is not None:
            self._load(resume_from)
        self.logger = RunLogger(self.out, dist.is_main, cfg.run.tensorboard)
        self.logger.truncate_after(self.start_step)
        self.stop = StopFlag()
        self.last_saved = self.start_step

    # -- checkpoints --------------------------------------------------------------------
    def state(self, step: int) -> dict[str, Any]:
        return {
            **self.method.checkpoint_state(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": step,
            "epoch": step // self.steps_per_epoch,
            "config": self.cfg.to_dict(),
            "mimkit_version": __version__,
        }

    def _load(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path, map_location=self.device)
        saved = state.get("config", {}).get("model")
        if saved is not None and saved != self.cfg.to_dict()["model"]:
            raise CheckpointError(
                f"{path} was trained with another model config ({saved}); "
                "use its config or another --output-dir"
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
        path = self.out / ckpt.LATEST
        if self.dist.is_main:
            ckpt.save_atomic(self.state(step), path)
        self.last_saved = step
        barrier()
        return path

    # -- one step -----------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, crops: list[Tensor], step: int) -> StepResult:
        """Forward, backward, optimiser step and the method's after-step update."""
        sched = self.schedules
        lr, wd = sched.learning_rate(step), sched.wd(step)
        set_hyperparameters(self.optimizer, lr, wd)
        seed = mix_seed(self.cfg.run.seed, step, self.dist.rank)
        torch.manual_seed(seed)
        with self._autocast():
            out = self.method.train_step(crops, step, seed)
        stats = {"loss": out.loss.detach().float(), **out.stats}
        # One host sync per step, for the log and the finiteness check together.
        values = dict(zip(stats, torch.stack(list(stats.values())).tolist(), strict=True))
        if not math.isfinite(values["loss"]):
            raise NonFiniteLossError(f"non-finite loss {values['loss']} at step {step}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.unscale_(self.optimizer)
        if self.cfg.optim.clip_grad > 0:
            nn.utils.clip_grad_norm_(self.method.trainable().parameters(), self.cfg.optim.clip_grad)
        self.method.before_optimizer_step(step)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.after_optimizer_step(step)
        values.update(lr=lr, wd=wd, **out.scalars)
        return StepResult(values, out.assign)

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

        def announce() -> None:
            if self.dist.is_main:
                print("\nmimkit: stopping after this step and saving a checkpoint...", flush=True)

        with self.stop.installed(announce):
            while step < last and status == "ok":
                epoch, start_batch = divmod(step, self.steps_per_epoch)
                step, status = self._run_epoch(epoch, start_batch, last)
        if status == "ok":
            status = "finished" if step >= total else "max_steps"
        if step != self.last_saved:
            self.save(step)
        return FitResult(status, step)

    def _run_epoch(self, epoch: int, start_batch: int, last: int) -> tuple[int, str]:
        run = self.cfg.run
        b = self.data.batch_size * self.dist.world_size
        step = epoch * self.steps_per_epoch + start_batch
        assigns, labels = [], []
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=start_batch,
            desc=f"epoch {epoch + 1}/{self.cfg.optim.epochs}",
            disable=not (self.dist.is_main and run.progress),
            unit="step",
            dynamic_ncols=True,
        )
        sums: dict[str, float] = {}
        count, status, t0 = 0, "ok", time.perf_counter()
        loader = self.data.loader(epoch, start_batch, pin_memory=self.device.type == "cuda")
        for crops, label in loader:
            if step >= last:
                break
            try:
                result = self.train_step(crops, step)
            except NonFiniteLossError:
                bar.close()
                self.save(step)  # the state before this step is still good
                raise
            step += 1
            count += 1
            for k, v in result.values.items():
                sums[k] = sums.get(k, 0.0) + v
            if result.assign is not None:
                assigns.append(result.assign.cpu())
                labels.append(label)
            ips = count * b / max(time.perf_counter() - t0, 1e-9)
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
        if count == 0:
            return step, status
        means = {k: v / count for k, v in sums.items()}
        means["images_per_s"] = count * b / max(time.perf_counter() - t0, 1e-9)
        if assigns:
            y, c = torch.cat(labels).numpy(), torch.cat(assigns).numpy()
            means["nmi"], means["ari"] = nmi(y, c), ari(y, c)
        if step == (epoch + 1) * self.steps_per_epoch:
            self._end_epoch(epoch + 1, means)
        self.logger.log("epoch", step, {"epoch": epoch + 1, **means})
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
            ckpt.keep_copy(self.out / ckpt.LATEST, f"checkpoint_{epoch:04d}.pth")
        for hook in self.hooks:
            if hook.due(epoch):
                means.update({f"{hook.name}_{k}": v for k, v in self.run_hook(hook).items()})

    def run_hook(self, hook: EpochHook) -> dict[str, float]:
        """``hook`` on the method's evaluation backbone, in the main process only."""
        if not self.dist.is_main:
            barrier()
            return {}
        result = hook(self.method.eval_backbone(), self.device)
        barrier()
        return result

    def close(self) -> None:
        self.logger.close()
