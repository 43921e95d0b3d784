"""How much the members of an ensemble agree on a map: per-voxel spread and rank agreement."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from xaimed.evaluate.similarity import spearman

# Top-k overlap compares the k voxels of largest |attribution|: 1% of the volume, the scale of
# the structures a map is read for.
TOP_FRACTION = 0.01


def top_k_overlap(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Share of the top ``fraction`` voxels by |value| that two maps have in common (0..1)."""
    x, y = np.abs(a).ravel(), np.abs(b).ravel()
    k = max(1, round(fraction * x.size))
    top_x = set(np.argpartition(-x, k - 1)[:k].tolist())
    top_y = set(np.argpartition(-y, k - 1)[:k].tolist())
    return len(top_x & top_y) / k


def member_agreement(maps: list[np.ndarray]) -> dict[str, Any]:
    """Pairwise Spearman (of |map|) and top-1% overlap between member maps, with their means."""
    pairs = []
    for i, j in itertools.combinations(range(len(maps)), 2):
        rho = spearman(maps[i], maps[j], absolute=True)
        pairs.append(
            {
                "members": [i, j],
                "spearman": None if math.isnan(rho) else round(rho, 6),
                "top_k_overlap": round(top_k_overlap(maps[i], maps[j]), 6),
            }
        )
    rhos = [p["spearman"] for p in pairs if p["spearman"] is not None]
    return {
        "members": len(maps),
        "top_k_fraction": TOP_FRACTION,
        "pairs": pairs,
        "mean_spearman": round(float(np.mean(rhos)), 6) if rhos else None,
        "mean_top_k_overlap": round(float(np.mean([p["top_k_overlap"] for p in pairs])), 6),
    }
