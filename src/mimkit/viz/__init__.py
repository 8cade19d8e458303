"""Pictures: the teacher's attention and the masks each strategy draws (``mimkit masks``)."""

from mimkit.viz.masks import (
    DEFAULT_STRATEGIES,
    MaskResult,
    Panel,
    compute_masks,
    default_layers,
    figure_pixels,
    heatmap_overlay,
    image_panels,
    mask_overlay,
    patches_to_pixels,
    readout_request,
    render_masks,
    resolve_layers,
    resolve_strategies,
    strategy_label,
    to_display,
)

__all__ = [
    "DEFAULT_STRATEGIES",
    "MaskResult",
    "Panel",
    "compute_masks",
    "default_layers",
    "figure_pixels",
    "heatmap_overlay",
    "image_panels",
    "mask_overlay",
    "patches_to_pixels",
    "readout_request",
    "render_masks",
    "resolve_layers",
    "resolve_strategies",
    "strategy_label",
    "to_display",
]
