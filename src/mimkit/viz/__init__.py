"""Pictures: the teacher's attention and the masks each strategy draws (``mimkit masks``)."""

from mimkit.viz.masks import (
    MaskResult,
    Panel,
    compute_masks,
    default_layers,
    figure_pixels,
    heatmap_overlay,
    image_panels,
    mask_overlay,
    panels_request,
    patches_to_pixels,
    render_masks,
    resolve_layers,
    resolve_strategies,
    to_display,
)

__all__ = [
    "MaskResult",
    "Panel",
    "compute_masks",
    "default_layers",
    "figure_pixels",
    "heatmap_overlay",
    "image_panels",
    "mask_overlay",
    "panels_request",
    "patches_to_pixels",
    "render_masks",
    "resolve_layers",
    "resolve_strategies",
    "to_display",
]
