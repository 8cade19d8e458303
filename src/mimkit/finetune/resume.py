"""Which fine-tuning checkpoint a run may continue: one of its own kind, for the same
backbone, weights file and settings (only settings that do not change what is computed may
differ), so that a resumed run replays the interrupted one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mimkit.errors import CheckpointError
from mimkit.finetune.config import FinetuneConfig
from mimkit.models import BackboneSpec
from mimkit.train import checkpoint as ckpt

CHECKPOINT_KIND = "finetune"
# Settings a resumed run may change: they do not change what is computed.
RESUMABLE_CHANGES = ("run.", "data.num_workers")
# Settings added since the first checkpoints, as runs without them ran (others: the default).
BEFORE_THEY_EXISTED = {"data.batch_augment": False}  # views were made image by image


def _flat(cfg: dict[str, Any]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, fields in cfg.items() for k, v in fields.items()}


def _same_model(saved: Any, description: dict[str, Any]) -> bool:
    """Compared as typed descriptions, so that checkpoints written before the description
    knew other backbone families still resume."""
    try:
        return BackboneSpec.from_dict(saved) == BackboneSpec.from_dict(description)
    except (TypeError, AttributeError):  # no description, or not one of ours
        return False


def read_resumable(
    path: Path,
    description: dict[str, Any],
    init_source: str,
    cfg: FinetuneConfig,
    world_size: int,
) -> dict[str, Any]:
    """The checkpoint at ``path``, or a CheckpointError naming what differs."""
    state = ckpt.load_checkpoint(path, map_location="cpu")
    if state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(
            f"{path} is not a fine-tuning checkpoint; choose another --output-dir"
        )
    saved = state.get("config", {})
    if not _same_model(saved.get("model"), description):
        raise CheckpointError(
            f"{path} fine-tuned another model ({saved.get('model')}); choose another --output-dir"
        )
    if state.get("init") != init_source:
        raise CheckpointError(
            f"{path} fine-tuned {state.get('init')}, not {init_source}; choose another --output-dir"
        )
    saved_world = state.get("world_size", 1)
    if saved_world != world_size:
        raise CheckpointError(
            f"{path} was run by {saved_world} process(es), this run has {world_size}: the "
            "steps per epoch would differ; resume with as many or choose another --output-dir"
        )
    mine, theirs = _flat(cfg.to_dict()), _flat(saved.get("finetune", {}))
    theirs = {**_flat(FinetuneConfig().to_dict()), **BEFORE_THEY_EXISTED, **theirs}
    for key in sorted(mine):
        if not key.startswith(RESUMABLE_CHANGES) and mine[key] != theirs.get(key):
            raise CheckpointError(
                f"{path} was run with {key}={theirs.get(key)!r}, not {mine[key]!r}; "
                "resume it with the same settings or choose another --output-dir"
            )
    return state
