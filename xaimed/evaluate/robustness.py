"""Robustness: max-sensitivity (Yeh et al. 2019) of a map under small uniform input noise.

The largest relative change ||e(x + d) - e(x)|| / ||e(x)|| (Frobenius norms) over ``samples``
draws of d, uniform in [-r, r] with r = ``radius`` times the input's value range, drawn from a
generator seeded with the run's seed, so the value repeats. The method is re-run once per draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from xaimed.evaluate.metric import CaseWork, StoredMap
    from xaimed.evaluate.settings import RobustnessSettings


def noise_draws(
    inputs: torch.Tensor, *, samples: int, radius: float, seed: int
) -> Iterator[torch.Tensor]:
    """The noisy inputs, one per draw, from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    span = float(inputs.max() - inputs.min()) or 1.0
    bound = radius * span
    for _ in range(samples):
        noise = (torch.rand(tuple(inputs.shape), generator=generator) * 2 - 1) * bound
        yield inputs + noise.to(inputs.device, inputs.dtype)


def max_sensitivity(
    explain_at: Callable[[torch.Tensor], np.ndarray],
    inputs: torch.Tensor,
    reference: np.ndarray,
    *,
    samples: int,
    radius: float,
    seed: int,
) -> float:
    """Max over noise draws of the relative change of the map; NaN for an all-zero map."""
    norm = float(np.linalg.norm(np.asarray(reference, dtype=np.float64)))
    if norm == 0:
        return math.nan
    worst = 0.0
    for noisy in noise_draws(inputs, samples=samples, radius=radius, seed=seed):
        change = np.asarray(explain_at(noisy), dtype=np.float64) - reference
        worst = max(worst, float(np.linalg.norm(change)) / norm)
    return worst


def compute(work: CaseWork, settings: RobustnessSettings) -> None:
    """The Metric protocol: max-sensitivity of every selected map, one re-explanation per draw
    (the unperturbed map is the stored one, not recomputed)."""

    def one(m: StoredMap) -> None:
        def explain_noisy(x: torch.Tensor) -> np.ndarray:
            work.stop.check()  # between noise draws
            return work.reexplain(m, inputs=x)

        value = max_sensitivity(
            explain_noisy, work.case.inputs, m.data,
            samples=settings.samples, radius=settings.radius, seed=work.seed,
        )  # fmt: skip
        work.add(m, "max_sensitivity", value)

    work.each(one, settings.methods)
