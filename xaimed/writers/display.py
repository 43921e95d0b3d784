"""How a source image is shown under a map: its grey window and the planes through it.

Both come from the anatomy, not from the whole volume: in a head or body scan most voxels are
background, so whole-volume percentiles put the upper window limit at the bulk tissue's own
intensity and everything brighter (a lesion, contrast) turns flat white. The foreground (the
body) is separated from the background by Otsu's threshold (scikit-image), and:

- the window runs from the background level (the volume's 1st percentile) to the larger of the
  foreground's 99th percentile and the level that puts the foreground's median at
  ``TISSUE_GREY`` of the grey ramp, so tissue brighter than the bulk stays distinguishable;
- the planes go through the strongest attribution *within the foreground*, after a light
  smoothing (one voxel), so a speckle of background noise or a single voxel does not pick them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Where the foreground's median intensity sits on the grey ramp (0 black, 1 white) at most.
TISSUE_GREY = 0.6
SMOOTHING_VOXELS = 1.0


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """Boolean mask of the body: voxels above Otsu's threshold (all voxels if that fails)."""
    from skimage.filters import threshold_otsu

    finite = image[np.isfinite(image)]
    if finite.size == 0 or np.ptp(finite) == 0:
        return np.ones(image.shape, dtype=bool)
    mask = image > threshold_otsu(finite)
    return mask if mask.any() else np.ones(image.shape, dtype=bool)


def display_window(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """Grey window (low, high) for ``image``, chosen from the foreground ``mask`` (default: Otsu).

    Low is the background level (the volume's 1st percentile); high is the larger of the
    foreground's 99th percentile and the level that puts the foreground's median at
    ``TISSUE_GREY``.
    """
    values = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return 0.0, 1.0
    mask = foreground_mask(values) if mask is None else mask
    body = values[mask & finite]
    if body.size == 0:
        body = values[finite]
    lo = float(np.percentile(values[finite], 1))
    median, p99 = (float(v) for v in np.percentile(body, [50, 99]))
    hi = max(p99, lo + (median - lo) / TISSUE_GREY)
    return lo, hi if hi > lo else lo + 1.0


def focus_voxel(values: np.ndarray, mask: np.ndarray) -> tuple[int, int, int]:
    """The voxel the planes go through: the largest smoothed |attribution| inside ``mask``.

    Falls back to the whole volume when the map is zero everywhere inside the mask.
    """
    magnitude = ndimage.gaussian_filter(
        np.nan_to_num(np.abs(values.astype(np.float32))), SMOOTHING_VOXELS
    )
    inside = np.where(mask, magnitude, -1.0)
    if not (inside > 0).any():
        inside = magnitude
    index = np.unravel_index(int(np.argmax(inside)), values.shape)
    return int(index[0]), int(index[1]), int(index[2])
