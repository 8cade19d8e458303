"""Frozen-backbone feature extraction, with an on-disk cache next to the checkpoint."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mimkit.data import collate_readable
from mimkit.errors import MimkitWarning, OutputError
from mimkit.models.backbone import Backbone
from mimkit.models.spec import BackboneSpec
from mimkit.runs.paths import replace_atomic

FEATURE_MODES = ("cls", "cls+avgpool", "last4", "last4+avgpool")


def check_mode(mode: str) -> str:
    if mode not in FEATURE_MODES:
        raise ValueError(f"unknown feature mode {mode!r}; choose one of {', '.join(FEATURE_MODES)}")
    return mode


def features_from_images(backbone: Backbone, images: Tensor, mode: str = "cls") -> Tensor:
    """Features ``[B, D']`` of a batch of images for one of :data:`FEATURE_MODES`.

    ``cls``: the backbone's final-norm pooled token (a ViT's CLS token). ``cls+avgpool``: with
    the mean patch token appended. ``last4``: the pooled tokens of the last 4 blocks (each
    after the final norm; fewer when the backbone has fewer), concatenated, DINO's
    linear-probe input; ``last4+avgpool`` appends the last block's mean patch token.
    """
    check_mode(mode)
    if mode.startswith("last4"):
        outs = backbone.last_blocks(images, 4)
        parts, last = [o.pooled for o in outs], outs[-1]
    else:
        last = backbone(images)
        parts = [last.pooled]
    if mode.endswith("+avgpool"):
        parts.append(last.patches.mean(dim=1))
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def _loader(dataset: Dataset, batch_size: int, num_workers: int, device: torch.device):
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        drop_last=False,
        persistent_workers=False,
        collate_fn=collate_readable,  # unreadable images leave the set (None batches)
    )


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def extract_features(
    backbone: nn.Module,
    dataset: Dataset,
    device: torch.device | str,
    batch_size: int = 256,
    mode: str = "cls",
    *,
    num_workers: int = 0,
    amp: bool = False,
    progress: bool = True,
    desc: str = "features",
) -> tuple[Tensor, Tensor]:
    """Run ``backbone`` (in eval mode, under ``torch.inference_mode``) over ``dataset``.

    ``dataset`` yields ``(image, label)``. Returns float32 CPU ``(features [N, D'], labels
    [N])``. ``amp=True`` uses bf16 autocast on CUDA (ignored elsewhere).
    """
    check_mode(mode)
    device = torch.device(device)
    loader = _loader(dataset, batch_size, num_workers, device)
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    use_amp = amp and device.type == "cuda"
    with _eval_mode(backbone), torch.inference_mode():
        for images, target in tqdm(
            filter(None, loader), desc=desc, disable=not progress, leave=False, total=len(loader)
        ):
            images = images.to(device, non_blocking=True)
            ctx = (
                torch.autocast(device_type="cuda", dtype=torch.bfloat16)
                if use_amp
                else contextlib.nullcontext()
            )
            with ctx:
                f = features_from_images(backbone, images, mode)
            feats.append(f.float().cpu())
            labels.append(torch.as_tensor(target).long().reshape(-1).cpu())
    if not feats:
        raise ValueError("the dataset is empty: no features to extract")
    return torch.cat(feats), torch.cat(labels)


# -- cache ------------------------------------------------------------------------------
def file_identity(path: str | os.PathLike) -> str:
    """Cheap identity of a weights file: resolved path, size and modification time."""
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


CACHE_VERSION = 1


def feature_cache_key(
    checkpoint: str | os.PathLike,
    checkpoint_key: str,
    data_fingerprint: str,
    spec: BackboneSpec,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, Any]:
    """Everything a checkpoint's features depend on besides the mode: the one cache key of
    ``mimkit knn``, ``mimkit linear`` and ``mimkit compare``."""
    return {
        "v": CACHE_VERSION,
        "checkpoint": file_identity(checkpoint),
        "checkpoint_key": checkpoint_key,
        "data": data_fingerprint,
        "img_size": spec.img_size,
        "patch_size": spec.patch_size,
        "mean": list(mean),
        "std": list(std),
    }


def cache_key(parts: dict[str, Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def cached_features(
    backbone: nn.Module,
    dataset: Dataset,
    device: torch.device | str,
    *,
    cache_dir: str | os.PathLike | None,
    key_parts: dict[str, Any],
    batch_size: int = 256,
    mode: str = "cls",
    num_workers: int = 0,
    amp: bool = False,
    progress: bool = True,
    desc: str = "features",
) -> tuple[Tensor, Tensor, bool]:
    """:func:`extract_features` with a disk cache: ``(features, labels, hit)``.

    The cache file is ``cache_dir/<hash of key_parts, mode, amp>.safetensors``. Callers put
    in ``key_parts`` everything the features depend on: the checkpoint identity
    (:func:`file_identity`), the checkpoint key, the data fingerprint, the image size.
    ``cache_dir=None`` disables the cache.
    """
    parts = dict(key_parts, mode=mode, amp=bool(amp and torch.device(device).type == "cuda"))
    path = Path(cache_dir) / f"{cache_key(parts)}.safetensors" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            t = load_file(str(path))
            return t["features"], t["labels"], True
        except Exception:  # a truncated or foreign file: extract again and overwrite
            pass
    feats, labels = extract_features(
        backbone,
        dataset,
        device,
        batch_size,
        mode,
        num_workers=num_workers,
        amp=amp,
        progress=progress,
        desc=desc,
    )
    if path is not None:
        meta = {"key": json.dumps(parts, sort_keys=True, default=str)}
        tensors = {"features": feats, "labels": labels}
        try:
            replace_atomic(path, lambda tmp: save_tensors(tensors, tmp, meta))
        except OutputError as err:  # a full disk or a read-only folder only costs the cache
            warnings.warn(f"features not cached ({err})", MimkitWarning, stacklevel=2)
    return feats, labels, False


def save_tensors(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' ``save_file`` (it streams: no second copy in memory), with the I/O errors
    it raises as its own type raised as OSError, with their OS error code."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as err:
        code = re.search(r"os error (\d+)", str(err))
        raise OSError(int(code.group(1)) if code else errno.EIO, str(err)) from None
