"""Localisation: how well a map on the source grid points at a ground-truth mask.

Every function takes the map and the mask voxel for voxel on the same grid (the source's) and
works on raw values: the strongest voxel is the largest value, not the largest magnitude, since
a map's positive values are the evidence *for* the explained output. Distances are in mm from
the grid's voxel spacing (the affine's column norms); grids are assumed orthogonal, which the
readers guarantee for NIfTI and DICOM volumes without shear.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage, stats

if TYPE_CHECKING:
    from xaimed.evaluate.metric import CaseWork, StoredMap
    from xaimed.evaluate.settings import LocalisationSettings


def _check(attribution: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(attribution, dtype=np.float64)
    m = np.asarray(mask) > 0
    if a.shape != m.shape:
        raise ValueError(f"map shape {a.shape} differs from the mask's {m.shape}")
    return a, m


# Values within this share of the map's range of its maximum count as maximal: a plateau of
# equal values (an occlusion box) can differ in the last float32 bits after resampling.
PLATEAU_TOLERANCE = 1e-6


def maximal_voxels(attribution: np.ndarray) -> np.ndarray:
    """Boolean map of the voxels that share the map's largest value (its plateau)."""
    a = np.asarray(attribution, dtype=np.float64)
    top, span = float(a.max()), float(a.max() - a.min())
    return a >= top - PLATEAU_TOLERANCE * span


def pointing_game(
    attribution: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    tolerance_mm: float = 0.0,
) -> float:
    """1.0 when a strongest voxel lies in the mask or within ``tolerance_mm`` of it, else 0.0.

    Ties: the strongest voxels are all those sharing the largest value (occlusion maps have
    boxes of equal value); it is a hit when **any** of them is in the mask, as Quantus's
    ``PointingGame`` counts it, not the first in array order. A constant map points nowhere and
    a mask without voxels has nothing to point at: both give NaN.
    """
    a, m = _check(attribution, mask)
    if not m.any() or float(a.max()) == float(a.min()):
        return math.nan
    peaks = maximal_voxels(a)
    if (peaks & m).any():
        return 1.0
    if tolerance_mm <= 0:
        return 0.0
    distance = ndimage.distance_transform_edt(~m, sampling=spacing)
    return float(distance[peaks].min() <= tolerance_mm)


def mass_inside(attribution: np.ndarray, mask: np.ndarray) -> float:
    """Share of the positive attribution that lies inside the mask (NaN when none is positive)."""
    a, m = _check(attribution, mask)
    positive = np.clip(a, 0.0, None)
    total = float(positive.sum())
    return float(positive[m].sum()) / total if total > 0 else math.nan


def auroc(attribution: np.ndarray, mask: np.ndarray) -> float:
    """Area under the ROC curve of voxel values as a score for 'inside the mask'.

    Computed from ranks (Mann-Whitney U); tied values count one half, as in scikit-learn.
    NaN when the mask is empty or covers every voxel.
    """
    a, m = _check(attribution, mask)
    n_pos = int(m.sum())
    n_neg = m.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(a.ravel())
    u = float(ranks[m.ravel()].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def rank_accuracy(attribution: np.ndarray, mask: np.ndarray) -> float:
    """Share of the mask-sized set of strongest voxels that lies in the mask (Arras et al.)."""
    a, m = _check(attribution, mask)
    n = int(m.sum())
    if n == 0:
        return math.nan
    top = np.argsort(-a.ravel(), kind="stable")[:n]
    return float(m.ravel()[top].sum()) / n


def top_voxels(attribution: np.ndarray, percent: float) -> np.ndarray:
    """Boolean map of the ``percent`` % strongest voxels (at least one; ties in C order)."""
    a = np.asarray(attribution, dtype=np.float64)
    n = max(1, math.ceil(a.size * percent / 100.0))
    out = np.zeros(a.size, dtype=bool)
    out[np.argsort(-a.ravel(), kind="stable")[:n]] = True
    return out.reshape(a.shape)


def dice_iou(region: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two boolean regions (NaN when both are empty)."""
    r, m = np.asarray(region) > 0, np.asarray(mask) > 0
    inter, union = int((r & m).sum()), int((r | m).sum())
    if union == 0:
        return math.nan, math.nan
    return 2.0 * inter / (int(r.sum()) + int(m.sum())), inter / union


def _surface(region: np.ndarray) -> np.ndarray:
    # Voxels of the region with a face neighbour outside it (a one-voxel region is its surface).
    eroded = ndimage.binary_erosion(region, structure=ndimage.generate_binary_structure(3, 1))
    return region & ~eroded


def hausdorff95(region: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """95th percentile of the symmetric surface distances (mm) between two regions.

    As in MedPy's ``hd95``: the distances from every surface voxel of each region to the other
    region's surface, pooled, then the 95th percentile. 0 when the regions are equal; NaN when
    either is empty.
    """
    r, m = np.asarray(region) > 0, np.asarray(mask) > 0
    if not r.any() or not m.any():
        return math.nan
    sr, sm = _surface(r), _surface(m)
    to_m = ndimage.distance_transform_edt(~sm, sampling=spacing)[sr]
    to_r = ndimage.distance_transform_edt(~sr, sampling=spacing)[sm]
    return float(np.percentile(np.concatenate([to_m, to_r]), 95))


def localisation_metrics(
    attribution: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    tolerance_mm: float,
    top_percent: float,
) -> dict[str, float]:
    """Every localisation metric of one map against one mask, by metric name."""
    top = top_voxels(attribution, top_percent)
    dice, iou = dice_iou(top, mask)
    return {
        "pointing_game": pointing_game(attribution, mask, spacing, tolerance_mm=tolerance_mm),
        "mass_inside": mass_inside(attribution, mask),
        "auroc": auroc(attribution, mask),
        "rank_accuracy": rank_accuracy(attribution, mask),
        "dice_top": dice,
        "iou_top": iou,
        "hausdorff95_mm": hausdorff95(top, mask, spacing),
    }


def compute(work: CaseWork, settings: LocalisationSettings) -> None:
    """The Metric protocol: every map of a case with a mask against it (none without)."""
    mask = work.mask
    if mask is None:
        return  # a case without a mask (a healthy case) has no localisation metrics

    def one(m: StoredMap) -> None:
        values = localisation_metrics(
            m.data, mask, work.case.spacing,
            tolerance_mm=settings.tolerance_mm, top_percent=settings.top_percent,
        )  # fmt: skip
        for metric, value in values.items():
            work.add(m, metric, value)

    work.each(one)
