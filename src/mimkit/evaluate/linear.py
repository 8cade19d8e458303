"""Linear probe on a frozen backbone (DINO's protocol, without BatchNorm).

One ``nn.Linear`` trained with SGD (momentum 0.9, no weight decay) and a cosine schedule,
either on cached features (fast) or on augmented images passed through the frozen backbone
every epoch. Top-1/top-5 on the held-out split is reported after every epoch; the summary
gives the final epoch and the best one, which is optimistic since it is chosen on val.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mimkit.evaluate.features import _eval_mode, features_from_images


class LinearClassifier(nn.Module):
    """DINO's linear head: a plain ``nn.Linear``, weight ~ N(0, 0.01), bias 0."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)
        nn.init.normal_(self.linear.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))


@dataclass
class LinearResult:
    history: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    head: LinearClassifier | None = None

    def as_dict(self) -> dict:
        return {
            "final": self.final,
            "best_optimistic": self.best,
            "lr": self.lr,
            "history": self.history,
        }


def scaled_lr(batch_size: int, base_lr: float = 0.003) -> float:
    """The probe's learning rate: ``base_lr x batch_size / 256``."""
    return base_lr * batch_size / 256


@torch.no_grad()
def accuracy_counts(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> Tensor:
    """Sums over ``(x, y)`` batches: ``[images, top-1 hits, top-5 hits, cross-entropy]``.

    A float64 tensor on the logits' device, so that processes can all-reduce it; nothing is
    copied to the host per batch.
    """
    totals = torch.zeros(4, dtype=torch.float64)
    for x, y in batches:
        logits = model(x).float()
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        row = torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum(), loss]).double()
        totals = totals.to(row.device)
        totals[0] += y.numel()
        totals[1:] += row
    return totals


def accuracy_percent(counts: Tensor, num_classes: int) -> dict[str, float]:
    """Top-1 (and top-5 above 5 classes) in percent and the mean loss, from
    :func:`accuracy_counts`."""
    n, c1, c5, loss = (float(v) for v in counts.cpu())
    out = {"top1": 100.0 * c1 / max(n, 1), "loss": loss / max(n, 1)}
    if num_classes > 5:
        out["top5"] = 100.0 * c5 / max(n, 1)
    return out


def _accuracy(
    head: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], num_classes: int
) -> dict[str, float]:
    head.eval()
    return accuracy_percent(accuracy_counts(head, batches), num_classes)


def _fit(
    head: LinearClassifier,
    train_epoch: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    steps_per_epoch: int,
    val_batches: Callable[[], Iterable[tuple[Tensor, Tensor]]],
    *,
    epochs: int,
    lr: float,
    num_classes: int,
    progress: bool,
    log: Callable[[dict[str, float]], None] | None,
) -> LinearResult:
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    total = max(epochs * steps_per_epoch, 1)
    result = LinearResult(lr=lr, head=head)
    step = 0
    bar = tqdm(range(epochs), desc="linear", disable=not progress, leave=False)
    for epoch in bar:
        head.train()
        run_loss, seen = torch.zeros(()), 0
        for x, y in train_epoch(epoch):
            # Cosine decay to 0 over all iterations.
            for g in opt.param_groups:
                g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            loss = nn.functional.cross_entropy(head(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run_loss = run_loss.to(loss.device) + loss.detach() * y.numel()
            seen += y.numel()
            step += 1
        stats = {"epoch": epoch + 1, "train_loss": float(run_loss) / max(seen, 1)}
        stats.update(
            {f"val_{k}": v for k, v in _accuracy(head, val_batches(), num_classes).items()}
        )
        result.history.append(stats)
        if not result.best or stats["val_top1"] > result.best["val_top1"]:
            result.best = dict(stats)
        bar.set_postfix(top1=f"{stats['val_top1']:.2f}")
        if log is not None:
            log(stats)
    result.final = dict(result.history[-1])
    return result


def _tensor_batches(
    x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator | None, device
) -> Iterable[tuple[Tensor, Tensor]]:
    n = x.shape[0]
    order = torch.randperm(n, generator=generator) if generator is not None else None
    for s in range(0, n, batch_size):
        idx = order[s : s + batch_size] if order is not None else slice(s, s + batch_size)
        yield x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)


def train_linear(
    train_features: Tensor,
    train_labels: Tensor,
    val_features: Tensor,
    val_labels: Tensor,
    *,
    epochs: int = 100,
    batch_size: int = 1024,
    lr: float | None = None,
    base_lr: float = 0.003,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
    log: Callable[[dict[str, float]], None] | None = None,
) -> LinearResult:
    """Train the linear probe on precomputed features (the fast path).

    ``lr`` defaults to ``base_lr x batch_size / 256``. Accuracies are in percent.
    """
    device = torch.device(device)
    c = num_classes or int(max(train_labels.max(), val_labels.max())) + 1
    torch.manual_seed(seed)
    head = LinearClassifier(train_features.shape[1], c).to(device)
    xtr, ytr = train_features.float().to(device), train_labels.long().to(device)
    xva, yva = val_features.float().to(device), val_labels.long().to(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    steps = math.ceil(xtr.shape[0] / batch_size)

    def train_epoch(_epoch: int):
        return _tensor_batches(xtr, ytr, batch_size, gen, device)

    def val_batches():
        return _tensor_batches(xva, yva, 4096, None, device)

    return _fit(
        head,
        train_epoch,
        steps,
        val_batches,
        epochs=epochs,
        lr=lr if lr is not None else scaled_lr(batch_size, base_lr),
        num_classes=c,
        progress=progress,
        log=log,
    )


def train_linear_augmented(
    backbone: nn.Module,
    train_dataset: Dataset,
    val_features: Tensor,
    val_labels: Tensor,
    *,
    mode: str = "last4",
    epochs: int = 100,
    batch_size: int = 1024,
    lr: float | None = None,
    base_lr: float = 0.003,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    amp: bool = False,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[dict[str, float]], None] | None = None,
) -> LinearResult:
    """Train the probe on augmented images (``train_dataset`` applies RandomResizedCrop +
    flip) through the frozen ``backbone`` every epoch; evaluate on precomputed val features.
    """
    device = torch.device(device)
    if num_classes is None:
        num_classes = int(val_labels.max()) + 1
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        train_dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        drop_last=False,
        generator=gen,
    )
    with torch.inference_mode(), _eval_mode(backbone):
        probe_dim = features_from_images(
            backbone, train_dataset[0][0].unsqueeze(0).to(device), mode
        ).shape[1]
    torch.manual_seed(seed)
    head = LinearClassifier(probe_dim, num_classes).to(device)
    use_amp = amp and device.type == "cuda"
    xva, yva = val_features.float().to(device), val_labels.long().to(device)

    def train_epoch(_epoch: int):
        with _eval_mode(backbone):
            for images, target in loader:
                images = images.to(device, non_blocking=True)
                ctx = (
                    torch.autocast(device_type="cuda", dtype=torch.bfloat16)
                    if use_amp
                    else contextlib.nullcontext()
                )
                with torch.inference_mode(), ctx:
                    f = features_from_images(backbone, images, mode)
                yield f.float().clone(), torch.as_tensor(target).long().to(device)

    def val_batches():
        return _tensor_batches(xva, yva, 4096, None, device)

    return _fit(
        head,
        train_epoch,
        len(loader),
        val_batches,
        epochs=epochs,
        lr=lr if lr is not None else scaled_lr(batch_size, base_lr),
        num_classes=num_classes,
        progress=progress,
        log=log,
    )
