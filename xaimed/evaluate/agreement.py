"""Agreement: rank correlation between the methods of a case, and between checkpoints.

Between checkpoints of repeated training runs (ensemble stability) the value is the mean
Spearman correlation over every pair of checkpoints' maps for one method and case; the run's
own model counts as one of them.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from xaimed.evaluate.similarity import spearman


def method_agreement(
    maps: dict[str, np.ndarray], *, absolute: bool = True
) -> dict[tuple[str, str], float]:
    """Spearman correlation of every pair of methods' maps, keyed by the pair (in given order)."""
    return {
        (a, b): spearman(maps[a], maps[b], absolute=absolute)
        for a, b in itertools.combinations(maps, 2)
    }


def checkpoint_agreement(maps: list[np.ndarray], *, absolute: bool = True) -> float:
    """Mean pairwise Spearman correlation of one method's maps from several checkpoints."""
    values = [spearman(a, b, absolute=absolute) for a, b in itertools.combinations(maps, 2)]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan
