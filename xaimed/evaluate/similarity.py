"""Comparisons of two maps on one grid, shared by the sanity, robustness and agreement metrics.

Rank correlation is Spearman's on the flattened maps; ``absolute`` compares magnitudes (as in
Adebayo et al. 2018, where a sign flip is not a different explanation), otherwise raw values.
SSIM is scikit-image's structural similarity on the 3D volumes (in the plane for a 2D image's
map), each scaled by its own largest magnitude first (so that maps of different scale compare by
shape), with a window of 7 voxels or the smallest odd size that fits.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def _prepared(a: np.ndarray, absolute: bool) -> np.ndarray:
    out = np.asarray(a, dtype=np.float64)
    return np.abs(out) if absolute else out


def spearman(a: np.ndarray, b: np.ndarray, *, absolute: bool = True) -> float:
    """Spearman rank correlation of two maps; NaN when either is constant."""
    x, y = _prepared(a, absolute).ravel(), _prepared(b, absolute).ravel()
    if x.shape != y.shape:
        raise ValueError(f"maps of different shapes {np.shape(a)} and {np.shape(b)}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def ssim(a: np.ndarray, b: np.ndarray, *, absolute: bool = True) -> float:
    """3D structural similarity of two maps, each scaled by its largest magnitude."""
    from skimage.metrics import structural_similarity

    x, y = _prepared(a, absolute), _prepared(b, absolute)
    if x.shape != y.shape:
        raise ValueError(f"maps of different shapes {x.shape} and {y.shape}")
    if x.ndim == 3 and x.shape[2] == 1:  # a 2D image's map (a plane of depth 1): 2D SSIM
        x, y = x[..., 0], y[..., 0]
    x = x / (np.abs(x).max() or 1.0)
    y = y / (np.abs(y).max() or 1.0)
    smallest = min(x.shape)
    window = min(7, smallest if smallest % 2 else smallest - 1)
    if window < 3:
        return math.nan
    data_range = 1.0 if absolute else 2.0
    return float(structural_similarity(x, y, win_size=window, data_range=data_range))
