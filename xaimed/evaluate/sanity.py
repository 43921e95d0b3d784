"""Sanity checks (Adebayo et al. 2018): does the map change when what the model learned does?

Model randomisation, cascading: on a deep copy of the network (the loaded model is never
touched), layers are re-initialised one more at a time from the output towards the input, the
method is re-run with the same target and seed after each step, and the new map is compared with
the original by Spearman rank correlation and 3D SSIM. Layers are the modules with a
``reset_parameters`` method, in reverse definition order, each re-initialised by its own
``reset_parameters`` after ``torch.manual_seed(seed + 1)``: the same cascade as Quantus's MPRT
(``layer_order="top_down"``), so that both give the same randomised models.

Data randomisation compares the map with the one of a checkpoint trained on shuffled labels.

A map passes when its Spearman correlation with the original at full randomisation (or with the
shuffled-label model) is below the threshold; a constant map leaves it undetermined.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from xaimed.errors import MethodError
from xaimed.evaluate.similarity import Ranked, ranked, spearman, spearman_ranked, ssim

if TYPE_CHECKING:
    from xaimed.evaluate.metric import CaseWork, StoredMap
    from xaimed.evaluate.settings import SanitySettings


@dataclass(frozen=True)
class CascadeStep:
    """One step of the cascade: the layer re-initialised last and the map's similarities."""

    layer: str
    spearman: float
    ssim: float


@dataclass(frozen=True)
class Verdict:
    """Pass / fail / undetermined, with the value and the rule it was judged by."""

    status: str
    value: float
    threshold: float

    @property
    def rule(self) -> str:
        """The rule in words, for the outputs."""
        return f"pass when Spearman < {self.threshold:g}"


def judge(value: float, threshold: float) -> Verdict:
    """The verdict for a Spearman correlation against the threshold."""
    if math.isnan(value):
        return Verdict("undetermined", value, threshold)
    return Verdict("pass" if value < threshold else "fail", value, threshold)


def cascade_layers(network: torch.nn.Module) -> list[str]:
    """Names of the layers the cascade re-initialises, output side first."""
    names = [n for n, m in network.named_modules() if hasattr(m, "reset_parameters")]
    return names[::-1]


def randomised_cascade(
    network: torch.nn.Module, seed: int, stops: list[str] | None = None
) -> Iterator[tuple[str, torch.nn.Module]]:
    """Yield (layer, model) with one more layer re-initialised each time, on one deep copy.

    With ``stops``, only the models after re-initialising down to those layers are yielded
    (every layer above is re-initialised too), and always the fully randomised one, so the
    cost is one re-explanation per stop.
    """
    layers = cascade_layers(network)
    if not layers:
        raise MethodError(
            "the model has no layer with reset_parameters (a TorchScript model?), so it cannot "
            "be randomised; load it as architecture + weights for the sanity checks."
        )
    unknown = [s for s in stops or [] if s not in layers]
    if unknown:
        raise MethodError(
            f"evaluate.sanity.layers: {unknown} are not layers with parameters of the model; "
            f"choose from {layers}."
        )
    model = copy.deepcopy(network)
    modules = dict(model.named_modules())
    for name in layers:
        torch.manual_seed(seed + 1)  # as Quantus's MPRT, so that both randomise alike
        with torch.no_grad():
            modules[name].reset_parameters()  # type: ignore[operator]
        if stops is None or name in stops or name == layers[-1]:
            yield name, model


def model_randomisation(
    explain_with: Callable[[torch.nn.Module], np.ndarray],
    network: torch.nn.Module,
    original: np.ndarray,
    *,
    seed: int,
    absolute: bool = True,
    stops: list[str] | None = None,
    original_ranks: Ranked | None = None,
) -> list[CascadeStep]:
    """The cascade: ``explain_with(model)`` is called once per step (see ``stops``).

    ``original_ranks`` (``ranked(original, absolute=absolute)``) saves ranking the original
    again; it is ranked once here otherwise, not once per step.
    """
    reference = original_ranks or ranked(original, absolute=absolute)
    steps = []
    for name, model in randomised_cascade(network, seed, stops):
        randomised = explain_with(model)
        steps.append(
            CascadeStep(
                name,
                spearman_ranked(reference, ranked(randomised, absolute=absolute)),
                ssim(original, randomised, absolute=absolute),
            )
        )
    return steps


def data_randomisation(
    original: np.ndarray, shuffled: np.ndarray, *, absolute: bool = True
) -> tuple[float, float]:
    """Spearman and SSIM between the map and the shuffled-label model's map."""
    return spearman(original, shuffled, absolute=absolute), ssim(
        original, shuffled, absolute=absolute
    )


def verdict_detail(verdict: Verdict) -> str:
    """The ``detail`` of a verdict's row: status, rule and value."""
    return f"{verdict.status}; {verdict.rule}; Spearman {verdict.value:.3f}"


def verdict_value(verdict: Verdict) -> float:
    """A verdict as a number: 1 pass, 0 fail, NaN undetermined."""
    return {"pass": 1.0, "fail": 0.0}.get(verdict.status, math.nan)


def compute(work: CaseWork, settings: SanitySettings) -> None:
    """The Metric protocol: the cascade of every selected map against the stored map (not
    recomputed), and the data-randomisation test when a shuffled-label model is given."""

    def one(m: StoredMap) -> None:
        def explain_with(network: torch.nn.Module) -> np.ndarray:
            work.stop.check()  # between cascade steps
            return work.reexplain(m, network=network)

        steps = model_randomisation(
            explain_with, work.loaded.module, m.data, seed=work.seed,
            absolute=settings.absolute, stops=settings.layers,
            original_ranks=m.ranked(settings.absolute),
        )  # fmt: skip
        for k, step in enumerate(steps, start=1):
            work.add(m, "cascade_spearman", step.spearman, f"{k}:{step.layer}")
            work.add(m, "cascade_ssim", step.ssim, f"{k}:{step.layer}")
        full = steps[-1]
        _verdict(work, m, "randomisation", full.spearman, full.ssim, settings)
        work.cascades.append({
            "case_id": work.case_id, "method": m.method, "target": m.target_name,
            "steps": [{"layer": s.layer, "spearman": s.spearman, "ssim": s.ssim} for s in steps],
        })  # fmt: skip
        if work.shuffled is not None:
            work.stop.check()
            shuffled = work.reexplain(m, network=work.shuffled.module)
            rho = spearman_ranked(
                m.ranked(settings.absolute), ranked(shuffled, absolute=settings.absolute)
            )
            similarity = ssim(m.data, shuffled, absolute=settings.absolute)
            _verdict(work, m, "data_randomisation", rho, similarity, settings)

    work.each(one, settings.methods)


def _verdict(
    work: CaseWork, m: StoredMap, test: str, rho: float, similarity: float, s: SanitySettings
) -> None:
    verdict = judge(rho, s.spearman_threshold)
    work.add(m, f"{test}_spearman", rho)
    work.add(m, f"{test}_ssim", similarity)
    work.add(m, f"{test}_verdict", verdict_value(verdict), verdict_detail(verdict))
