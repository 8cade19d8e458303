"""What the teacher attends to and which patches each strategy masks: the pictures behind
``mimkit masks``.

Computation and drawing are separate: :func:`compute_masks` runs the teacher once (one
forward with the union of every readout asked for) and calls the masking package's own score
and selection functions, and :func:`render_masks` draws one image's panels with matplotlib's
Agg canvas (no pyplot, no display). The overlay helpers are pure NumPy.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from mimkit.errors import ConfigError
from mimkit.masking import (
    MaskingConfig,
    MaskStrategy,
    check_supported,
    cls_attention_scores,
    mask_crop,
    parse_strategy,
    readout_request,
)
from mimkit.models import CLS_ROWS, ROLLOUT, Backbone, ReadoutRequest, resolve_layer
from mimkit.models.readout import Readout
from mimkit.models.score_heads import load_score_heads
from mimkit.runs.paths import write_atomic
from mimkit.weights.safe_load import read_torch_file

if TYPE_CHECKING:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

MASK_COLOR = (1.0, 0.15, 0.1)
MASK_ALPHA = 0.6
HEAT_ALPHA = 0.7
DPI = 100
TITLE_PX = 22
HEADER_PX = 30
PAD_PX = 8


# -- choosing what to show ----------------------------------------------------------------
def default_layers(depth: int) -> list[int]:
    """First, middle and last block (0, (depth-1)//2, depth-1), without repeats."""
    return list(dict.fromkeys([0, (depth - 1) // 2, depth - 1]))


def resolve_layers(layers: Sequence[int] | None, depth: int) -> list[int]:
    """Block indices in ``0..depth-1`` (negatives count from the end), in the given order."""
    if layers is None:
        return default_layers(depth)
    if not layers:
        raise ConfigError("--layers needs at least one block index")
    return list(dict.fromkeys(resolve_layer(layer, depth) for layer in layers))


def resolve_strategies(
    texts: Sequence[str], depth: int, readouts: frozenset[str], arch: str, defaults: bool = False
) -> list[MaskStrategy]:
    """Parse and resolve every strategy against ``depth`` (ConfigError on the first bad one,
    or one the backbone ``arch`` cannot compute; ``defaults``: drop those instead)."""
    if defaults:
        texts = [t for t in texts if readouts or not parse_strategy(t).score]
    if not texts:
        raise ConfigError("--strategies needs at least one strategy")
    seen: dict[str, MaskStrategy] = {}
    for t in texts:
        s = parse_strategy(t, depth)
        check_supported([s.score], readouts, arch)
        seen.setdefault(s.label, s)
    return list(seen.values())


# -- computing ----------------------------------------------------------------------------
@dataclass
class MaskResult:
    """Everything the pictures show, for a batch of ``B`` images on a ``grid x grid`` patch grid.

    ``attention[l]``: head-mean CLS attention of block l, ``[B, N]``. ``rollout``: the CLS row of
    the rollout over all blocks, ``[B, N]`` (both empty for a backbone without a CLS token).
    ``masks[label]``: ``[B, grid, grid]`` bool.
    """

    grid: int
    depth: int
    attention: dict[int, Tensor] = field(default_factory=dict)
    rollout: Tensor | None = None
    masks: dict[str, Tensor] = field(default_factory=dict)

    @property
    def rollout_range(self) -> tuple[int, int]:
        return (0, self.depth - 1)


def panels_request(
    strategies: Sequence[MaskStrategy], layers: Sequence[int], depth: int, readouts: frozenset[str]
) -> ReadoutRequest:
    """The union of what the panels need: CLS rows of ``layers`` and the full rollout (when the
    backbone reports them), and every attention-guided strategy's own score."""
    base = ReadoutRequest(
        cls_layers=frozenset(layers) if CLS_ROWS in readouts else frozenset(),
        rollout_ranges=frozenset({(0, depth - 1)}) if ROLLOUT in readouts else frozenset(),
    )
    return readout_request((s.score for s in strategies), depth, base)


def _concat(readouts: list[Readout]) -> Readout:
    first = readouts[0]
    return Readout(
        cls_attn={k: torch.cat([r.cls_attn[k] for r in readouts]) for k in first.cls_attn},
        rollout={k: torch.cat([r.rollout[k] for r in readouts]) for k in first.rollout},
        patch_scores={
            k: torch.cat([r.patch_scores[k] for r in readouts]) for k in first.patch_scores
        },
    )


def learned_score_heads(
    strategies: Sequence[MaskStrategy], checkpoint: Path, dim: int
) -> dict[str, nn.Module]:
    """The heads of the learned scores ``strategies`` use (``pred``, ``adv``), from the
    mimkit pretraining ``checkpoint`` that trained them; empty when they use none."""
    kinds = learned_kinds(strategies)
    if not kinds:
        return {}
    state = read_torch_file(checkpoint)
    return load_score_heads(state if isinstance(state, dict) else {}, kinds, dim, str(checkpoint))


def learned_kinds(strategies: Sequence[MaskStrategy]) -> list[str]:
    """The learned score kinds (``pred``, ``adv``) among ``strategies``, sorted."""
    return sorted({s.score.kind for s in strategies if s.score is not None and s.score.learned})


@torch.no_grad()
def teacher_readout(
    model: Backbone,
    images: Tensor,
    request: ReadoutRequest,
    batch_size: int = 32,
    score_heads: Mapping[str, nn.Module] | None = None,
) -> Readout:
    """One forward per chunk of ``batch_size`` images, reporting ``request`` and the learned
    scores of ``score_heads`` (kind -> head on the patch tokens), on CPU."""
    model.eval()
    device = next(model.parameters()).device
    parts = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        f = model.forward_features(x, request=request)
        parts.append(
            Readout(
                cls_attn={k: v.float().cpu() for k, v in f.readout.cls_attn.items()},
                rollout={k: v.float().cpu() for k, v in f.readout.rollout.items()},
                patch_scores={
                    k: head.to(device)(f.patches).float().cpu()
                    for k, head in (score_heads or {}).items()
                },
            )
        )
    return _concat(parts)


def compute_masks(
    model: Backbone,
    images: Tensor,
    strategies: Sequence[MaskStrategy],
    layers: Sequence[int],
    ratio: float,
    seed: int = 0,
    show_max: float = 0.1,
    batch_size: int = 32,
    progress: float = 1.0,
    score_heads: Mapping[str, nn.Module] | None = None,
) -> MaskResult:
    """Attention maps and one mask per strategy for normalised ``images`` ``[B, C, H, W]``.

    Every image is masked (mask_prob 1) at exactly ``ratio``, by the same ``mask_crop`` that
    training uses, at ``progress`` of training (``mix``'s schedule; a ``mix`` without its own
    follows ``masking.alpha``'s default). Learned scores (``pred``, ``adv``) come from
    ``score_heads`` on the model's patch tokens. Each strategy draws from its own generator
    seeded by ``(seed, position in the list)``, so results are deterministic.
    """
    depth, readouts = model.depth, model.readouts
    grid = model.grid_size(images.shape[-1])
    b = images.shape[0]
    request = panels_request(strategies, layers, depth, readouts)
    readout = teacher_readout(model, images, request, batch_size, score_heads)
    result = MaskResult(grid=grid, depth=depth)
    if CLS_ROWS in readouts:
        for layer in layers:
            result.attention[layer] = cls_attention_scores(readout.cls_attn[layer], "mean")
    if ROLLOUT in readouts:
        result.rollout = readout.rollout[(0, depth - 1)]
    alpha = MaskingConfig().alpha_ramp()
    for i, strategy in enumerate(strategies):
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + i)
        strategy = strategy.with_alpha(alpha)
        m = mask_crop(strategy, readout, b, grid, ratio, gen, "cpu", show_max, None, progress)
        result.masks[strategy.label] = m.cpu()
    return result


# -- pure picture helpers -----------------------------------------------------------------
def patches_to_pixels(values: np.ndarray | Tensor, size: int) -> np.ndarray:
    """A ``[G, G]`` (or ``[G*G]``) per-patch array blown up to ``[size, size]`` pixels."""
    v = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values)
    g = math.isqrt(v.size)
    if g * g != v.size:
        raise ValueError(f"{v.size} patch values do not form a square grid")
    if size % g:
        raise ValueError(f"image size {size} is not a multiple of the {g}x{g} patch grid")
    p = size // g
    return np.repeat(np.repeat(v.reshape(g, g), p, axis=0), p, axis=1)


def mask_overlay(
    image: np.ndarray,
    mask: np.ndarray | Tensor,
    color: Sequence[float] = MASK_COLOR,
    alpha: float = MASK_ALPHA,
) -> np.ndarray:
    """``image`` ``[H, W, 3]`` in [0, 1] with the masked patches tinted by ``color``; unmasked
    pixels are returned unchanged."""
    if image.ndim != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"image must be square [H, W, 3], got {image.shape}")
    covered = patches_to_pixels(np.asarray(mask, dtype=bool), image.shape[0])[..., None]
    tint = (1 - alpha) * image + alpha * np.asarray(color, dtype=image.dtype)
    return np.where(covered, tint, image)


def heatmap_overlay(image: np.ndarray, scores: np.ndarray | Tensor, cmap: str = "inferno"):
    """``image`` blended with a colour map of per-patch ``scores`` (min-max scaled per image)."""
    from matplotlib import colormaps

    s = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, np.float64)
    lo, hi = float(s.min()), float(s.max())
    s = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
    heat = colormaps[cmap](patches_to_pixels(s, image.shape[0]))[..., :3]
    return (1 - HEAT_ALPHA) * image + HEAT_ALPHA * heat


def to_display(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised ``[C, H, W]`` tensor back to an ``[H, W, 3]`` float array in [0, 1]."""
    x = image.detach().float().cpu()
    c = x.shape[0]
    m = torch.tensor(list(mean)[:c] if len(mean) >= c else [mean[0]] * c).view(c, 1, 1)
    s = torch.tensor(list(std)[:c] if len(std) >= c else [std[0]] * c).view(c, 1, 1)
    x = (x * s + m).clamp(0, 1)
    if c == 1:
        x = x.expand(3, -1, -1)
    return x.permute(1, 2, 0).numpy()


# -- drawing ------------------------------------------------------------------------------
def figure_pixels(n_panels: int, columns: int, panel_px: int) -> tuple[int, int]:
    """``(width, height)`` in pixels of a picture with ``n_panels`` panels."""
    cols = min(columns, n_panels)
    rows = math.ceil(n_panels / cols)
    width = cols * panel_px + (cols + 1) * PAD_PX
    height = HEADER_PX + rows * (panel_px + TITLE_PX + PAD_PX)
    return width, height


@dataclass
class Panel:
    title: str
    rgb: np.ndarray  # [H, W, 3] in [0, 1]
    grid: int | None = None  # draw patch boundaries for this grid


def image_panels(display: np.ndarray, result: MaskResult, index: int) -> list[Panel]:
    """The panels of image ``index``: the image, attention per layer, rollout, every mask."""
    panels = [Panel("image", display)]
    for layer, att in result.attention.items():
        panels.append(Panel(f"CLS attention, block {layer}", heatmap_overlay(display, att[index])))
    if result.rollout is not None:
        a, b = result.rollout_range
        rollout = heatmap_overlay(display, result.rollout[index])
        panels.append(Panel(f"rollout, blocks {a}-{b}", rollout))
    for label, masks in result.masks.items():
        m = masks[index]
        title = f"{label} ({int(m.sum())}/{m.numel()})"
        panels.append(Panel(title, mask_overlay(display, m), result.grid))
    return panels


def upscale(panel: Panel, panel_px: int) -> np.ndarray:
    """A panel's image resized (nearest) to ``panel_px`` square, patch boundaries drawn in
    faint white when the panel has a grid, and a one-pixel grey frame."""
    rgb = np.clip(np.asarray(panel.rgb, dtype=np.float64), 0, 1)
    idx = np.arange(panel_px) * rgb.shape[0] // panel_px
    big = rgb[idx][:, idx].copy()
    if panel.grid:
        patch = idx * panel.grid // rgb.shape[0]
        edge = np.flatnonzero(np.diff(patch)) + 1
        big[edge, :] = 0.65 * big[edge, :] + 0.35
        big[:, edge] = 0.65 * big[:, edge] + 0.35
    big[[0, -1], :] = 0.5
    big[:, [0, -1]] = 0.5
    return big


def _fit_header(text: Text, canvas: FigureCanvasAgg, room: float) -> None:
    """A header wider than the figure (a long one over few panels) would be cut at both
    edges: it goes on two lines, broken at the space nearest its middle, and shrinks if it is
    still too wide."""
    text.set_fontsize(10)
    if text.get_window_extent(canvas.get_renderer()).width <= room:
        return
    line = text.get_text()
    spaces = [i for i, c in enumerate(line) if c == " "]
    if spaces:
        cut = min(spaces, key=lambda i: abs(i - len(line) / 2))
        text.set_text(line[:cut] + "\n" + line[cut + 1 :])
        text.set_fontsize(8)  # two lines in the header's band
        text.set_linespacing(1.0)
    wide = text.get_window_extent(canvas.get_renderer()).width
    if wide > room:
        text.set_fontsize(text.get_fontsize() * 0.95 * room / wide)


def render_masks(
    panels: Sequence[Panel],
    path: str | Path,
    header: str,
    columns: int = 5,
    panel_px: int = 200,
) -> Path:
    """Draw ``panels`` on a grid and save a PNG of exactly :func:`figure_pixels` pixels.

    Panels are placed pixel for pixel (``figimage``, no axes), which keeps this fast."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = figure_pixels(len(panels), columns, panel_px)
    cols = min(columns, len(panels))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    text = fig.text(0.5, 1 - (HEADER_PX / 2) / height, header, ha="center", va="center")
    _fit_header(text, canvas, width - 2 * PAD_PX)
    for i, panel in enumerate(panels):
        row, col = divmod(i, cols)
        left = PAD_PX + col * (panel_px + PAD_PX)
        top = HEADER_PX + row * (panel_px + TITLE_PX + PAD_PX) + TITLE_PX
        fig.figimage(upscale(panel, panel_px), xo=left, yo=height - top - panel_px, origin="upper")
        fig.text(
            (left + panel_px / 2) / width,
            1 - (top - 4) / height,
            panel.title,
            ha="center",
            va="bottom",
            fontsize=9,
        )
    out, png = Path(path), io.BytesIO()
    fig.savefig(png, dpi=DPI, format="png", facecolor="white")
    write_atomic(out, png.getvalue())  # a full disk leaves no half-written picture
    return out
