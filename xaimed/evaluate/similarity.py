"""Comparisons of two maps on one grid, shared by the sanity, robustness and agreement metrics.

Rank correlation is Spearman's on the flattened maps; ``absolute`` compares magnitudes (as in
Adebayo et al. 2018, where a sign flip is not a different explanation), otherwise raw values.
SSIM is scikit-image's structural similarity on the 3D volumes (in the plane for a 2D image's
map), each scaled by its own largest magnitude first (so that maps of different scale compare by
shape), with a window of 7 voxels or the smallest odd size that fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


def _prepared(a: np.ndarray, absolute: bool) -> np.ndarray:
    out = np.asarray(a, dtype=np.float64)
    return np.abs(out) if absolute else out


@dataclass(frozen=True)
class Ranked:
    """A map's average ranks (SciPy's ``rankdata``, as ``spearmanr`` ranks), centred, with
    their norm: Spearman's rho is the Pearson correlation of two such rank vectors. Ranking is
    the costly part (a sort of every voxel), so a map compared many times is ranked once."""

    shape: tuple[int, ...]
    centred: np.ndarray | None  # None: a constant map (no correlation is defined)
    norm: float


def ranked(a: np.ndarray, *, absolute: bool = True) -> Ranked:
    """The ranks of ``a`` (of ``|a|`` when ``absolute``) for :func:`spearman_ranked`."""
    x = _prepared(a, absolute).ravel()
    if x.size == 0 or np.ptp(x) == 0:
        return Ranked(np.shape(a), None, 0.0)
    r = stats.rankdata(x)
    r -= r.mean()
    return Ranked(np.shape(a), r, float(np.sqrt(np.dot(r, r))))


def spearman_ranked(a: Ranked, b: Ranked) -> float:
    """Spearman rank correlation of two ranked maps; NaN when either is constant."""
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes {a.shape} and {b.shape}")
    if a.centred is None or b.centred is None:
        return math.nan
    rho = float(np.dot(a.centred, b.centred)) / (a.norm * b.norm)
    return max(-1.0, min(1.0, rho))


def spearman(a: np.ndarray, b: np.ndarray, *, absolute: bool = True) -> float:
    """Spearman rank correlation of two maps; NaN when either is constant."""
    if np.shape(a) != np.shape(b):
        raise ValueError(f"maps of different shapes {np.shape(a)} and {np.shape(b)}")
    return spearman_ranked(ranked(a, absolute=absolute), ranked(b, absolute=absolute))


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
