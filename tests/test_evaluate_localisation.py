"""Localisation metrics against hand-made volumes with known answers, independent reference
computations (scikit-learn's AUROC, brute-force surface distances) and Quantus."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from xaimed.evaluate import localisation as loc

SHAPE = (12, 10, 8)
SPACING = (1.5, 2.0, 3.0)


def _mask() -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[3:7, 2:6, 2:5] = True
    return mask


def _noisy_map(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=SHAPE) + 2.0 * _mask()


def test_a_map_equal_to_the_mask_scores_perfectly():
    mask = _mask()
    values = loc.localisation_metrics(
        mask.astype(float), mask, SPACING, tolerance_mm=0.0,
        top_percent=100 * mask.sum() / mask.size,
    )  # fmt: skip
    assert values["pointing_game"] == 1.0
    assert values["mass_inside"] == 1.0
    assert values["auroc"] == 1.0
    assert values["rank_accuracy"] == 1.0
    assert values["dice_top"] == 1.0 and values["iou_top"] == 1.0
    assert values["hausdorff95_mm"] == 0.0


def test_a_map_outside_the_mask_scores_zero():
    mask = _mask()
    inverse = (~mask).astype(float)
    assert loc.pointing_game(inverse, mask, SPACING) == 0.0
    assert loc.mass_inside(inverse, mask) == 0.0
    assert loc.auroc(inverse, mask) == 0.0
    assert loc.rank_accuracy(inverse, mask) == 0.0


def test_pointing_game_tolerance_is_in_millimetres():
    mask = _mask()
    attribution = np.zeros(SHAPE)
    attribution[8, 3, 3] = 1.0  # two voxels past the mask's last row along axis 0: 3 mm away
    assert loc.pointing_game(attribution, mask, SPACING) == 0.0
    assert loc.pointing_game(attribution, mask, SPACING, tolerance_mm=2.9) == 0.0
    assert loc.pointing_game(attribution, mask, SPACING, tolerance_mm=3.0) == 1.0
    assert math.isnan(loc.pointing_game(attribution, np.zeros(SHAPE, bool), SPACING))


def test_pointing_game_counts_a_plateau_that_touches_the_mask():
    # An occlusion-like map: one box of equal maximal value that starts before the mask in C
    # order (np.argmax's first maximal voxel, [1, 0, 0], lies outside) and covers part of it.
    mask = _mask()
    attribution = np.zeros(SHAPE)
    attribution[1:5, 0:4, 0:4] = 2.0
    first = np.unravel_index(int(np.argmax(attribution)), SHAPE)
    assert not mask[first]
    assert loc.pointing_game(attribution, mask, SPACING) == 1.0
    # The same plateau moved off the mask is a miss, and within tolerance a hit again: the
    # nearest maximal voxel is 2 voxels (3 mm) past the mask along axis 0.
    moved = np.zeros(SHAPE)
    moved[8:11, 0:4, 0:4] = 2.0
    assert loc.pointing_game(moved, mask, SPACING) == 0.0
    assert loc.pointing_game(moved, mask, SPACING, tolerance_mm=3.0) == 1.0
    # Float32 rounding of a resampled plateau still counts as one plateau (the strictly largest
    # voxel is now outside the mask).
    rounded = attribution.copy()
    rounded[1, 0, 0] += 1e-9
    assert loc.pointing_game(rounded, mask, SPACING) == 1.0
    # A constant map points nowhere.
    assert math.isnan(loc.pointing_game(np.ones(SHAPE), mask, SPACING))


def test_mass_inside_counts_positive_attribution_only():
    mask = _mask()
    attribution = np.where(mask, 1.0, -5.0)
    attribution[0, 0, 0] = 1.0  # one positive voxel outside the mask
    assert loc.mass_inside(attribution, mask) == pytest.approx(mask.sum() / (mask.sum() + 1))
    assert math.isnan(loc.mass_inside(-np.ones(SHAPE), mask))


def test_auroc_equals_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    mask = _mask()
    attribution = np.round(_noisy_map(), 1)  # rounding makes ties
    expected = roc_auc_score(mask.ravel(), attribution.ravel())
    assert loc.auroc(attribution, mask) == pytest.approx(expected, abs=1e-12)


def test_top_voxels_dice_and_iou_by_counting():
    mask = _mask()
    attribution = _noisy_map()
    top = loc.top_voxels(attribution, 5.0)
    n = math.ceil(0.05 * attribution.size)
    assert top.sum() == n
    assert attribution[top].min() >= attribution[~top].max()
    inter = (top & mask).sum()
    dice, iou = loc.dice_iou(top, mask)
    assert dice == pytest.approx(2 * inter / (n + mask.sum()))
    assert iou == pytest.approx(inter / (top | mask).sum())


def _surface_points(region: np.ndarray) -> np.ndarray:
    """Surface voxels found without erosion: a voxel with a face neighbour outside."""
    padded = np.pad(region, 1)
    inside = padded[1:-1, 1:-1, 1:-1]
    exposed = np.zeros_like(inside)
    for axis in range(3):
        for shift in (-1, 1):
            exposed |= ~np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return np.argwhere(inside & exposed) * np.asarray(SPACING)


def test_hausdorff95_equals_brute_force_surface_distances():
    mask = _mask()
    other = np.zeros(SHAPE, dtype=bool)
    other[5:10, 1:4, 3:8] = True
    a, b = _surface_points(other), _surface_points(mask)
    d = cdist(a, b)
    expected = np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95)
    assert loc.hausdorff95(other, mask, SPACING) == pytest.approx(expected)
    assert loc.hausdorff95(mask, mask, SPACING) == 0.0
    shifted = np.roll(mask, 1, axis=2)  # one voxel along the 3 mm axis
    assert loc.hausdorff95(shifted, mask, SPACING) == pytest.approx(3.0)


def test_agrees_with_quantus_on_3d_maps():
    quantus = pytest.importorskip("quantus")
    mask = _mask()
    maps = np.stack([_noisy_map(seed) for seed in range(3)])
    # Quantus's attribution localisation sums raw values (abs=False); ours the positive part.
    # On non-negative maps both are the share inside the mask.
    maps = maps - maps.min()
    a = maps[:, None].astype(np.float32)
    s = np.broadcast_to(mask, a.shape).astype(np.float32)
    x = np.zeros_like(a)
    y = np.zeros(len(a), dtype=int)
    kwargs = {"model": None, "x_batch": x, "y_batch": y, "a_batch": a, "s_batch": s,
              "channel_first": True}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pointing = quantus.PointingGame(abs=False, normalise=False, disable_warnings=True)(**kwargs)
        share = quantus.AttributionLocalisation(abs=False, normalise=False, disable_warnings=True)(
            **kwargs
        )
        rank = quantus.RelevanceRankAccuracy(abs=False, normalise=False, disable_warnings=True)(
            **kwargs
        )
    for i, attribution in enumerate(maps):
        assert loc.pointing_game(attribution, mask, SPACING) == float(pointing[i])
        assert loc.mass_inside(attribution, mask) == pytest.approx(float(share[i]), rel=1e-5)
        assert loc.rank_accuracy(attribution, mask) == pytest.approx(float(rank[i]))
