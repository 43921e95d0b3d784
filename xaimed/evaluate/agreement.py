"""Agreement: rank correlation between the methods of a case, and between checkpoints.

Between checkpoints of repeated training runs (ensemble stability) the value is the mean
Spearman correlation over every pair of checkpoints' maps for one method and case; the run's
own model counts as one of them.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from xaimed.evaluate.similarity import Ranked, ranked, spearman_ranked

if TYPE_CHECKING:
    from xaimed.evaluate.metric import CaseWork, StoredMap
    from xaimed.evaluate.settings import AgreementSettings


def method_agreement(
    maps: dict[str, np.ndarray | Ranked], *, absolute: bool = True
) -> dict[tuple[str, str], float]:
    """Spearman correlation of every pair of methods' maps, keyed by the pair (in given order).

    Maps may come ranked already (:func:`xaimed.evaluate.similarity.ranked` with the same
    ``absolute``); each is ranked once, not once per pair."""
    ranks = {k: _ranked(v, absolute) for k, v in maps.items()}
    return {
        (a, b): spearman_ranked(ranks[a], ranks[b]) for a, b in itertools.combinations(ranks, 2)
    }


def checkpoint_agreement(maps: list[np.ndarray | Ranked], *, absolute: bool = True) -> float:
    """Mean pairwise Spearman correlation of one method's maps from several checkpoints."""
    ranks = [_ranked(m, absolute) for m in maps]
    values = [spearman_ranked(a, b) for a, b in itertools.combinations(ranks, 2)]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _ranked(m: np.ndarray | Ranked, absolute: bool) -> Ranked:
    return m if isinstance(m, Ranked) else ranked(m, absolute=absolute)


def compute(work: CaseWork, settings: AgreementSettings) -> None:
    """The Metric protocol: every pair of the case's methods per target, and each map against
    its re-explanations by ``settings.checkpoints`` when given. Agreement compares signed or
    absolute maps as ``evaluate.sanity.absolute`` says."""
    absolute = work.config.evaluate.of("sanity").absolute
    if work.checkpoints:

        def one(m: StoredMap) -> None:
            maps: list[np.ndarray | Ranked] = [m.ranked(absolute)]
            for c in work.checkpoints:
                work.stop.check()
                maps.append(work.reexplain(m, network=c.module))
            value = checkpoint_agreement(maps, absolute=absolute)
            detail = f"{len(maps)} models: the run's and {len(work.checkpoints)} checkpoint(s)"
            work.add(m, "checkpoint_agreement_spearman", value, detail)

        work.each(one)
    by_target: dict[str, dict[str, np.ndarray | Ranked]] = defaultdict(dict)
    for m in work.maps:
        by_target[m.target_name][m.method] = m.ranked(absolute)
    for target, group in by_target.items():
        for (a, b), value in method_agreement(group, absolute=absolute).items():
            work.add_row(f"{a} vs {b}", target, "method_agreement_spearman", value)
