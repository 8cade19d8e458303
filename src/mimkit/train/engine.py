"""The iBOT pretraining loop.

One step: teacher forward on the unmasked global crops (reading out only the attention the
mask strategies need) -> masks -> student forward on the masked global crops and the local
crops -> loss -> optimizer step -> EMA teacher update. The loop knows nothing about which
strategy it runs: the mask generator asks the teacher for what it needs.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mimkit import __version__
from mimkit.config import PretrainConfig
from mimkit.config_ranges import check_ranges
from mimkit.devices import resolve_device
from mimkit.errors import CheckpointError, ConfigError, MimkitError, OutputError
from mimkit.folder_lock import FolderLock
from mimkit.losses import IBOTLoss
from mimkit.masking import MaskConfig, MaskGenerator, parse_score, parse_strategies
from mimkit.models import build_vit
from mimkit.models.head import IBOTHead
from mimkit.models.network import IBOTNetwork
from mimkit.train import checkpoint as ckpt
from mimkit.train.distributed import DistInfo, barrier, from_main, init_distributed
from mimkit.train.logging import RunLogger
from mimkit.train.metrics import ari, nmi
from mimkit.train.optim import build_optimizer, set_hyperparameters
from mimkit.train.sampling import EpochSampler, SeededViews, mix_seed
from mimkit.train.schedules import Schedules

MASK_STREAM = 1  # mixed into the mask generator's seed: a stream apart from torch's global one


class NonFiniteLossError(MimkitError):
    """The loss, the gradients or the weights became NaN or infinite. The step was not
    applied, and the last checkpoint saved (all finite) stays as it is."""


class MultiViewStudent(nn.Module):
    """All student views in one ``forward``, so DDP sees one forward per backward."""

    def __init__(self, network: IBOTNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(
        self, global_views: Tensor, masks: Tensor, local_views: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        out = self.network(global_views, mask=masks)
        cls_logits = out.cls_logits
        if local_views is not None:
            local = self.network(local_views, cls_only=True)
            cls_logits = torch.cat([cls_logits, local.cls_logits])
        assert out.patch_logits is not None and out.patch_embed is not None
        return cls_logits, out.patch_logits, out.patch_embed


def build_network(cfg: PretrainConfig, drop_path: float) -> IBOTNetwork:
    m = cfg.model
    backbone = build_vit(m.arch, m.img_size, m.patch_size, drop_path_rate=drop_path)
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
    return IBOTNetwork(backbone, head)


def validate_config(cfg: PretrainConfig) -> None:
    """Every check that can fail on user input, before any data is read or file written."""
    from mimkit.data import validate_data_spec

    check_ranges(cfg)  # every number finite and in range, before anything uses one
    m, d, o = cfg.model, cfg.data, cfg.optim
    backbone = build_vit(m.arch, m.img_size, m.patch_size)  # raises on bad arch/sizes
    if d.global_crops < 1:
        raise ConfigError("data.global_crops must be at least 1")
    if d.local_crops < 0:
        raise ConfigError("data.local_crops must be 0 or more")
    if d.local_crops and d.local_crop_size % m.patch_size:
        raise ConfigError(
            f"local crop size {d.local_crop_size} is not divisible by patch size {m.patch_size}"
        )
    for name, (lo, hi) in (("global_scale", d.global_scale), ("local_scale", d.local_scale)):
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"data.{name} must satisfy 0 < min <= max <= 1, got {lo}, {hi}")
    probs = (d.flip_prob, d.jitter_prob, d.grayscale_prob, d.solarize_prob, *d.blur_prob)
    if not all(0 <= p <= 1 for p in probs):
        raise ConfigError("data augmentation probabilities must lie in [0, 1]")
    if not 0 <= d.jitter_strength <= 5:
        raise ConfigError(f"data.jitter_strength must lie in [0, 5], got {d.jitter_strength}")
    if o.epochs < 1 or o.batch_size < 1:
        raise ConfigError("optim.epochs and optim.batch_size must be at least 1")
    if d.on_bad_image not in ("skip", "error"):
        raise ConfigError("data.on_bad_image must be 'skip' or 'error'")
    if cfg.run.amp not in ("auto", "bf16", "fp16", "none"):
        raise ConfigError("run.amp must be auto, bf16, fp16 or none")
    if cfg.loss.lambda3 > 0 and d.global_crops < 2:
        raise ConfigError("the contrastive term (lambda3 > 0) needs at least 2 global crops")
    if cfg.loss.lambda3 > 0 and not 1 <= cfg.loss.contrastive_k <= backbone.num_patches // 2:
        raise ConfigError(
            f"loss.contrastive_k must be between 1 and {backbone.num_patches // 2} "
            f"(half the {backbone.num_patches} patches)"
        )
    parse_strategies(cfg.masking.strategies, d.global_crops, backbone.depth)
    if cfg.loss.contrastive_score:
        parse_score(cfg.loss.contrastive_score, backbone.depth)
    mask_config(cfg).validate()
    validate_data_spec(d.dataset, "train")
    if cfg.run.init and not Path(cfg.run.init).is_file():
        raise ConfigError(f"--init weights {cfg.run.init} do not exist")


def mask_config(cfg: PretrainConfig) -> MaskConfig:
    k = cfg.masking
    return MaskConfig(
        ratio=tuple(k.ratio), ratio_per=k.ratio_per, mask_prob=k.mask_prob, show_max=k.show_max
    )


def lock_output_dir(out: Path, dist: DistInfo) -> FolderLock:
    """Rank 0 locks the output folder for the whole run (other ranks hold an unlocked
    handle); every rank learns whether that worked, so that all stop together or none."""
    lock = FolderLock(out)
    failure: OutputError | None = None
    if dist.is_main:
        try:
            lock.acquire()
            ckpt.remove_stale_temporaries(out)  # safe: no other run saves here now
        except OutputError as err:
            failure = err
    message = from_main(None if failure is None else str(failure))
    if message is not None:
        raise failure or OutputError(message)
    return lock


@dataclass
class StepResult:
    values: dict[str, float]
    teacher_assign: Tensor  # argmax prototype of the teacher on global crop 1, [B]


class Pretrainer:
    def __init__(
        self, cfg: PretrainConfig, resume: bool = True, resume_from: str | Path | None = None
    ) -> None:
        """``resume``: continue from ``output_dir/checkpoint.pth`` when there is one (else
        refuse to overwrite it); ``resume_from``: continue from that checkpoint file instead."""
        validate_config(cfg)
        if resume_from is not None and not Path(resume_from).is_file():
            raise CheckpointError(f"checkpoint {resume_from} to resume from does not exist")
        self.cfg = cfg
        self.dist: DistInfo = init_distributed(
            "cuda"
            if cfg.run.device.startswith("cuda")
            or (cfg.run.device == "auto" and torch.cuda.is_available())
            else "cpu"
        )
        self.device = resolve_device(
            cfg.run.device, self.dist.local_rank if self.dist.enabled else None
        )
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.out = Path(cfg.run.output_dir)
        existing = ckpt.latest_checkpoint(self.out)
        if existing is not None and not resume and resume_from is None:
            raise ConfigError(
                f"{existing} exists; resume it (drop --no-resume) or choose another --output-dir"
            )
        self.lock = lock_output_dir(self.out, self.dist)
        try:
            self._build_data()
            self._build_models()
            self.start_step = 0
            self.saved_step: int | None = None  # the step of OUTPUT_DIR/checkpoint.pth
            self.kept = ckpt.KeptCheckpoints(self.out, self.dist.is_main)
            if resume_from is not None:
                self._load(Path(resume_from))
            elif existing is not None:
                self._load(existing)
                self.saved_step = self.start_step
            self.logger = RunLogger(self.out, self.dist.is_main, cfg.run.tensorboard)
            self.logger.truncate_after(self.start_step)
        except BaseException:
            self.lock.release()
            raise
        self._stop_requested = False

    def close(self) -> None:
        """End of the run: close the logs and free the output folder for the next run."""
        self.logger.close()
        self.lock.release()

    # -- construction -------------------------------------------------------------------
    def _build_data(self) -> None:
        from mimkit.data import (
            Augmentations,
            MultiCropTransform,
            build_dataset,
            check_images,
            default_normalization,
        )

        cfg, d = self.cfg, self.cfg.data
        self.dataset = build_dataset(
            d.dataset, "train", None, subset=d.subset, on_bad_image=d.on_bad_image
        )
        check_images(self.dataset)  # unreadable files fail (or warn) before training starts
        mean, std = default_normalization(d.dataset)
        transform = MultiCropTransform(
            global_size=cfg.model.img_size,
            local_size=d.local_crop_size,
            num_global=d.global_crops,
            num_local=d.local_crops,
            global_scale=tuple(d.global_scale),
            local_scale=tuple(d.local_scale),
            mean=mean,
            std=std,
            augment=Augmentations(
                flip_prob=d.flip_prob,
                jitter_prob=d.jitter_prob,
                jitter_strength=d.jitter_strength,
                grayscale_prob=d.grayscale_prob,
                blur_prob=tuple(d.blur_prob),
                solarize_prob=d.solarize_prob,
            ),
        )
        self.views = SeededViews(self.dataset, transform, cfg.run.seed)
        try:
            self.sampler = EpochSampler(
                len(self.views),
                cfg.optim.batch_size,
                cfg.run.seed,
                self.dist.rank,
                self.dist.world_size,
            )
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.steps_per_epoch = self.sampler.batches_per_epoch

    def _build_models(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.run.seed)  # same initial weights for the same seed
        self.student = build_network(cfg, cfg.model.drop_path_rate).to(self.device)
        if cfg.run.init:
            from mimkit.weights import load_backbone

            # Same layout checks as evaluation: a file that does not fully match is refused.
            load_backbone(cfg.run.init, self.student.backbone, cfg.run.init_key)
        self.teacher = build_network(cfg, 0.0).to(self.device)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.depth = self.student.backbone.depth
        self.grid = self.student.backbone.grid_size()
        strategies = parse_strategies(cfg.masking.strategies, cfg.data.global_crops, self.depth)
        self.masker = MaskGenerator(strategies, mask_config(cfg), self.depth)
        self.contrastive = None
        self.contrastive_score = None
        if cfg.loss.lambda3 > 0:
            from mimkit.losses.contrastive import DenseContrastiveLoss

            self.contrastive = DenseContrastiveLoss(
                k=cfg.loss.contrastive_k, temperature=cfg.loss.contrastive_tau
            )
            spec = cfg.loss.contrastive_score
            if spec is None and not all(s.attention_guided for s in strategies):
                spec = "raw:-1"
            self.contrastive_score = parse_score(spec, self.depth) if spec else None
        self.request = self.masker.readout_request()
        if self.contrastive_score is not None:
            self.request = self.request.merge(self.contrastive_score.readout_request(self.depth))
        self.student_views: nn.Module = MultiViewStudent(self.student)
        if self.dist.enabled:
            self.student_views = DistributedDataParallel(
                self.student_views,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
            # DDP broadcast rank 0's initial weights; the teacher starts from them too.
            self.teacher.load_state_dict(self.student.state_dict())
        self.loss = IBOTLoss(
            cfg.model.out_dim,
            cfg.model.patch_out_dim,
            cfg.data.global_crops,
            student_temp=cfg.loss.student_temp,
            center_momentum=cfg.loss.center_momentum,
            lambda1=cfg.loss.lambda1,
            lambda2=cfg.loss.lambda2,
        ).to(self.device)
        self.optimizer = build_optimizer(self.student)
        total_batch = cfg.optim.batch_size * self.dist.world_size
        o, lo = cfg.optim, cfg.loss
        self.schedules = Schedules(
            steps_per_epoch=self.steps_per_epoch,
            epochs=o.epochs,
            lr=o.lr * total_batch / 256,
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
        )
        amp = cfg.run.amp
        if amp == "auto":
            amp = "bf16" if self.device.type == "cuda" else "none"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=amp == "fp16" and self.device.type == "cuda"
        )
        self.mask_rng = torch.Generator(device=self.device)
        self._s_params = [p for _, p in sorted(self.student.named_parameters())]
        self._t_params = [p for _, p in sorted(self.teacher.named_parameters())]

    # -- checkpoints --------------------------------------------------------------------
    def state(self, step: int) -> dict[str, Any]:
        return {
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "loss": self.loss.state_dict(),
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
            self.student.load_state_dict(state["student"])
            self.teacher.load_state_dict(state["teacher"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.loss.load_state_dict(state["loss"])
            self.scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError) as err:
            msg = f"{path} does not match this run: {err}".splitlines()[0]
            raise CheckpointError(msg) from None
        self.start_step = int(state["step"])

    # -- one step -----------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, crops: list[Tensor], step: int) -> StepResult:
        cfg, g = self.cfg, self.cfg.data.global_crops
        sched = self.schedules
        set_hyperparameters(self.optimizer, sched.learning_rate(step), sched.wd(step))
        # Every step draws from streams seeded by (seed, step, rank): exact resume anywhere.
        # Masks draw from their own stream, never from torch's global one (drop path): runs
        # of different strategies with the same seed then differ in their masks only.
        torch.manual_seed(mix_seed(cfg.run.seed, step, self.dist.rank))
        self.mask_rng.manual_seed(mix_seed(cfg.run.seed, step, self.dist.rank, MASK_STREAM))

        crops = [c.to(self.device, non_blocking=True) for c in crops]
        b = crops[0].shape[0]
        global_views = torch.cat(crops[:g])
        local_views = torch.cat(crops[g:]) if len(crops) > g else None
        t_temp, tp_temp = sched.teacher_temps(step)

        with self._autocast():
            with torch.no_grad():
                teacher_out = self.teacher(global_views, request=self.request)
            masks = torch.cat(
                self.masker.generate(
                    teacher_out.readout, b, self.grid, generator=self.mask_rng, device=self.device
                )
            ).flatten(1)
            s_cls, s_patch, s_embed = self.student_views(global_views, masks, local_views)
            assert teacher_out.patch_logits is not None
            terms = self.loss(
                s_cls,
                s_patch,
                teacher_out.cls_logits,
                teacher_out.patch_logits,
                masks,
                t_temp,
                tp_temp,
            )
            loss = terms["loss"]
            if self.contrastive is not None:
                scores = torch.stack(
                    [
                        self.masker.scores(teacher_out.readout, c, b, self.contrastive_score)
                        for c in range(g)
                    ]
                )
                con = self.contrastive(s_embed.float().reshape(g, b, *s_embed.shape[1:]), scores)
                loss = loss + cfg.loss.lambda3 * con
                terms["contrastive"] = con.detach()

        with torch.no_grad():
            t_assign = teacher_out.cls_logits.argmax(-1)
            stats = {k: v.detach().float() for k, v in terms.items()}
            stats["mask_ratio"] = masks.float().mean()
            stats["agreement"] = (t_assign == s_cls[: g * b].argmax(-1)).float().mean()

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        # The global gradient norm (clip_grad 0: measured, not clipped) for the finiteness check.
        stats["grad_norm"] = nn.utils.clip_grad_norm_(
            self.student.parameters(), cfg.optim.clip_grad or math.inf
        )
        # One host sync per step, for the log and the finiteness checks together.
        values = dict(zip(stats, torch.stack(list(stats.values())).tolist(), strict=True))
        self._check_step_finite(values, step)
        if sched.epoch_of(step) < cfg.optim.freeze_last_layer:
            for p in self.student.head.last_layer_parameters():
                p.grad = None
        self.scaler.step(self.optimizer)
        self.scaler.update()

        with torch.no_grad():
            m = sched.momentum(step)
            torch._foreach_mul_(self._t_params, m)
            torch._foreach_add_(self._t_params, self._s_params, alpha=1 - m)

        values.update(
            lr=sched.learning_rate(step),
            wd=sched.wd(step),
            momentum=m,
            teacher_temp=t_temp,
            teacher_patch_temp=tp_temp,
        )
        return StepResult(values, t_assign[:b].cpu())

    # -- non-finite values ----------------------------------------------------------------
    def _check_step_finite(self, values: dict[str, float], step: int) -> None:
        """Stop before applying a step whose loss or gradients are not finite. Under fp16 loss
        scaling, infinite gradients are the scaler's business (it skips the step)."""
        if not math.isfinite(values["loss"]):
            raise self._non_finite(f"non-finite loss {values['loss']} at step {step}", step)
        if not self.scaler.is_enabled() and not math.isfinite(values["grad_norm"]):
            raise self._non_finite(f"non-finite gradient norm at step {step}", step)

    def _weights_finite(self) -> bool:
        tensors = [*self.student.parameters(), *self.teacher.parameters(), *self.loss.buffers()]
        return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())

    def _non_finite(self, what: str, step: int | None = None) -> NonFiniteLossError:
        """The error for non-finite values met at ``step`` (None: while saving). When the
        checkpoint holds that very step's state, that state is what failed: roll back."""
        if step is not None and step == self.saved_step and self.dist.is_main:
            self.saved_step = self.kept.roll_back()  # (the message is the main process's)
        step = self.saved_step
        kept = (
            f"{self.out / ckpt.LATEST} from step {step} (epoch {step / self.steps_per_epoch:g}) "
            "is kept; lower the learning rate (--lr) and rerun to resume from it"
            if step is not None
            else "no checkpoint was saved before it; lower the learning rate (--lr) and rerun"
        )
        return NonFiniteLossError(f"{what}; {kept}")

    # -- the loop -----------------------------------------------------------------------
    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        self.sampler.set_epoch(epoch, start_batch)
        self.views.set_epoch(epoch)
        return DataLoader(
            self.views,
            batch_size=self.cfg.optim.batch_size,
            sampler=self.sampler,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
        )

    @contextlib.contextmanager
    def _graceful_stop(self) -> Iterator[None]:
        """First Ctrl-C (or SIGTERM) finishes the current step, saves and exits."""

        def handler(signum: int, frame: Any) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            if self.dist.is_main:
                print("\nmimkit: stopping after this step and saving a checkpoint...", flush=True)

        try:
            old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: no handlers, still works
            old = {}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def fit(self) -> dict[str, Any]:
        """Train to the end (or ``max_steps``, or a stop signal); return how it ended."""
        cfg = self.cfg
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        total = self.schedules.total_steps
        last = total if cfg.run.max_steps is None else min(total, cfg.run.max_steps)
        step, status = self.start_step, "ok"
        self.student_views.train()
        with self._graceful_stop():
            while step < last and status == "ok":
                epoch, start_batch = divmod(step, self.steps_per_epoch)
                step, status = self._run_epoch(epoch, start_batch, last)
        if status == "ok":
            status = "finished" if step >= total else "max_steps"
        if step != self.saved_step:
            self.save(step)
        return {"status": status, "step": step, "steps_per_epoch": self.steps_per_epoch}

    def save(self, step: int) -> Path:
        """Save the state after ``step`` steps, unless a weight is not finite: then the last
        checkpoint stays and NonFiniteLossError says which step it holds."""
        path = self.out / ckpt.LATEST
        if not self._weights_finite():  # same weights on every rank: all stop together
            raise self._non_finite(f"non-finite weights after step {step}")
        if self.dist.is_main:
            self.kept.save(self.state(step))
        self.saved_step = step
        barrier()
        return path

    def _run_epoch(self, epoch: int, start_batch: int, last: int) -> tuple[int, str]:
        cfg = self.cfg
        b = cfg.optim.batch_size * self.dist.world_size
        step = epoch * self.steps_per_epoch + start_batch
        assigns, labels = [], []
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=start_batch,
            desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
            disable=not (self.dist.is_main and cfg.run.progress),
            unit="step",
            dynamic_ncols=True,
        )
        sums: dict[str, float] = {}
        count = 0
        t0 = time.perf_counter()
        status = "ok"
        for crops, label in self._loader(epoch, start_batch):
            if step >= last:
                break
            try:
                result = self.train_step(crops, step)
            except NonFiniteLossError:
                bar.close()
                raise  # the last checkpoint known good stays (see _non_finite)
            if step == self.saved_step:
                self.kept.confirm()  # a finite step from the saved state: it is good
            step += 1
            count += 1
            for k, v in result.values.items():
                sums[k] = sums.get(k, 0.0) + v
            assigns.append(result.teacher_assign)
            labels.append(label)
            ips = count * b / max(time.perf_counter() - t0, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{result.values['loss']:.3f}", img_s=f"{ips:.0f}")
            if step % cfg.run.log_every_steps == 0:
                self.logger.log("step", step, {**result.values, "images_per_s": ips})
            if cfg.run.save_every_steps and step % cfg.run.save_every_steps == 0:
                self.save(step)
            if self._stop_requested:
                status = "stopped"
                break
        bar.close()
        if count == 0:
            return step, status
        means = {k: v / count for k, v in sums.items()}
        means["images_per_s"] = count * b / max(time.perf_counter() - t0, 1e-9)
        y, c = torch.cat(labels).numpy(), torch.cat(assigns).numpy()
        means["nmi"], means["ari"] = nmi(y, c), ari(y, c)
        if step == (epoch + 1) * self.steps_per_epoch:
            self.save(step)
            every = cfg.run.keep_every_epochs
            if self.dist.is_main and every and (epoch + 1) % every == 0:
                ckpt.keep_copy(self.out / ckpt.LATEST, f"checkpoint_{epoch + 1:04d}.pth")
            if cfg.run.knn_every_epochs and (epoch + 1) % cfg.run.knn_every_epochs == 0:
                means.update({f"knn_{k}": v for k, v in self.online_knn().items()})
        self.logger.log("epoch", step, {"epoch": epoch + 1, **means})
        if self.dist.is_main and cfg.run.progress:
            keys = ("loss", "cls", "patch", "contrastive", "nmi", "knn_top1")
            shown = ", ".join(f"{k} {means[k]:.4g}" for k in keys if k in means)
            tqdm.write(f"epoch {epoch + 1}: {shown}")
        return step, status

    def online_knn(self, k: int = 20) -> dict[str, float]:
        """k-NN of the teacher backbone on the data set's val split (main process only)."""
        if not self.dist.is_main:
            barrier()
            return {}
        from mimkit.data import build_dataset, default_normalization, eval_transform
        from mimkit.evaluate import online_knn

        d = self.cfg.data
        mean, std = default_normalization(d.dataset)
        tf = eval_transform(self.cfg.model.img_size, mean, std)
        train = build_dataset(d.dataset, "train", tf, subset=d.subset)
        val = build_dataset(d.val_dataset or d.dataset, "val", tf)
        result = online_knn(self.teacher.backbone, train, val, self.device, k=k)
        self.teacher.eval()
        barrier()
        return {key: float(v) for key, v in result.items()}


def pretrain(
    cfg: PretrainConfig, resume: bool = True, resume_from: str | Path | None = None
) -> dict[str, Any]:
    trainer = Pretrainer(cfg, resume=resume, resume_from=resume_from)
    try:
        result = trainer.fit()
        result["output_dir"] = str(trainer.out)
        return result
    finally:
        trainer.close()
