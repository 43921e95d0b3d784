"""Blend a map over a windowed grey image into RGB pixels (for Secondary Captures).

The grey window comes from the body's intensities (:func:`xaimed.writers.display.display_window`),
as in the PNG. Signed maps use a diverging colour map centred at zero; non-negative maps a
sequential one.
Voxels whose magnitude is below ``threshold`` x the largest magnitude stay uncoloured, so the
anatomy shows through, as in the PNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xaimed.writers.display import display_window


@dataclass(frozen=True)
class OverlayStyle:
    """How a map is coloured over the image."""

    colormap: str = "inferno"
    diverging_colormap: str = "RdBu_r"
    opacity: float = 0.5
    threshold: float = 0.1
    legend: bool = True


def window_limits(image: np.ndarray) -> tuple[float, float]:
    """Grey window of the whole series, chosen from the body's intensities (not the background's).

    One window for every slice, so that slices of a series compare.
    """
    return display_window(image)


def blend(
    image: np.ndarray,
    values: np.ndarray,
    *,
    window: tuple[float, float],
    magnitude: float,
    signed: bool,
    style: OverlayStyle,
) -> np.ndarray:
    """RGB uint8 pixels (rows, cols, 3) of ``values`` blended over ``image`` (rows, cols).

    ``magnitude`` (the largest |value| of the whole map) fixes the colour scale so that every
    slice of a series uses the same one.
    """
    from matplotlib import colormaps

    lo, hi = window
    grey = np.clip((image.astype(np.float64) - lo) / (hi - lo), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if magnitude > 0:
        if signed:
            cmap = colormaps[style.diverging_colormap]
            scaled = (values / magnitude + 1) / 2
        else:
            cmap = colormaps[style.colormap]
            scaled = values / magnitude
        colours = cmap(np.clip(scaled, 0, 1))[..., :3]
        shown = (np.abs(values) >= style.threshold * magnitude)[..., None]
        alpha = style.opacity * shown
        rgb = (1 - alpha) * rgb + alpha * colours
    if style.legend:
        _legend(rgb, style, signed)
    return np.round(rgb * 255).astype(np.uint8)


def _legend(rgb: np.ndarray, style: OverlayStyle, signed: bool) -> None:
    """A colour bar in the bottom-right corner (no text: the image stays free of annotation)."""
    from matplotlib import colormaps

    rows, cols = rgb.shape[:2]
    if rows < 32 or cols < 32:
        return
    height, width = max(2, rows // 48), cols // 4
    cmap = colormaps[style.diverging_colormap if signed else style.colormap]
    bar = cmap(np.linspace(0, 1, width))[:, :3]
    rgb[rows - 2 * height : rows - height, cols - width - 2 : cols - 2] = bar[None]
