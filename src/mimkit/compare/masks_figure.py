"""``masks.png``: the masks every strategy of a grid draws at the end of training, side by
side on the same few val images. One row per image; after the image, one panel per
strategy (per crop strategy when its crops differ), each drawn by that strategy's own final
teacher (its first seed) at one mask ratio with every image masked, by the same functions
``mimkit masks`` uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from mimkit.compare.runner import checkpoint_for_epoch
from mimkit.compare.spec import RunSpec
from mimkit.data import default_normalization
from mimkit.errors import output_error
from mimkit.ibot.mask_diagnostics import val_images
from mimkit.viz.masks import (
    Panel,
    compute_masks,
    learned_score_heads,
    mask_overlay,
    render_masks,
    resolve_strategies,
    to_display,
)
from mimkit.weights.io import load_pretrained

FIGURE = "masks.png"
IMAGES = 4
PANEL_PX = 170
TITLE_CHARS = 24  # what fits over a panel
SEED = 0  # of the masks' random draws (the same for every strategy)


@dataclass
class StrategyMasks:
    title: str  # the strategy's name (and crop strategy)
    masks: Tensor  # [B, G, G] bool


def final_runs(runs: Sequence[RunSpec]) -> list[tuple[RunSpec, Path]]:
    """Per strategy, its first run (longest budget, first seed) with that run's final
    checkpoint; a strategy whose first run has none is left out. Only the first seed: a grid
    run in parts keeps records, not checkpoints, and a later part must not redraw the figure
    from whichever seeds it happens to hold."""
    firsts: dict[str, RunSpec] = {}
    for run in sorted(runs, key=lambda r: (-r.epochs, r.strategy.seeds.index(r.seed))):
        firsts.setdefault(run.strategy.name, run)
    picked = {
        name: (run, path)
        for name, run in firsts.items()
        if (path := checkpoint_for_epoch(run, run.epochs)) is not None
    }
    order: dict[str, int] = {}
    for i, r in enumerate(runs):  # the config's order: where each strategy first appears
        order.setdefault(r.strategy.name, i)
    return sorted(picked.values(), key=lambda rp: order[rp[0].strategy.name])


def strategy_masks(
    run: RunSpec, checkpoint: Path, images: Tensor, ratio: float
) -> list[StrategyMasks]:
    """The masks of ``run``'s strategies (one per distinct crop strategy) on ``images``,
    from the teacher of ``checkpoint``."""
    model, spec, _ = load_pretrained(checkpoint, "teacher")
    texts = list(dict.fromkeys(run.config.masking.strategies))
    strategies = resolve_strategies(texts, model.depth, model.readouts, spec.arch or "ViT")
    # A ``mix`` without its own schedule follows the run's masking.alpha, as in training.
    alpha = run.config.masking.alpha_ramp()
    strategies = [s.with_alpha(alpha) for s in strategies]
    heads = learned_score_heads(strategies, checkpoint, model.embed_dim)
    result = compute_masks(model, images, strategies, [], ratio, seed=SEED, score_heads=heads)
    name = run.strategy.name
    return [
        StrategyMasks(
            name if len(texts) == 1 else _crop_title(name, s.label), result.masks[s.label]
        )
        for s in strategies
    ]


def _crop_title(name: str, label: str) -> str:
    """``name · label``, the name shortened to fit a panel's width."""
    room = TITLE_CHARS - len(label) - 3
    short = name if len(name) <= room else name[: max(room - 1, 3)] + "…"
    return f"{short} · {label}"


def write_masks_figure(runs: Sequence[RunSpec], out: Path, title: str = "") -> Path | None:
    """``out/masks.png`` (None when no run has finished training yet)."""
    finals = final_runs(runs)
    if not finals:
        return None
    cfg = finals[0][0].config
    images = val_images(cfg, IMAGES)
    lo, hi = (float(x) for x in cfg.masking.ratio)
    ratio = (lo + hi) / 2
    columns = [m for run, path in finals for m in strategy_masks(run, path, images, ratio)]
    mean, std = default_normalization(cfg.data.dataset)
    grid = columns[0].masks.shape[-1]
    panels = []
    for i in range(images.shape[0]):
        display = to_display(images[i], mean, std)
        panels.append(Panel(f"val image {i + 1}", display))
        for col in columns:
            m = col.masks[i]
            panels.append(Panel(col.title, mask_overlay(display, m), grid))
    path = out / FIGURE
    header = (
        f"{title + '  |  ' if title else ''}masks at the end of training, ratio {ratio:g}, "
        f"every image masked (first seed of each strategy)"
    )
    try:
        render_masks(panels, path, header, columns=1 + len(columns), panel_px=PANEL_PX)
    except OSError as err:
        raise output_error(path, err) from None
    return path
