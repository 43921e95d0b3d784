"""Faithfulness: deletion and insertion curves, computed in batches on the model's input grid.

Deletion replaces the most important voxels (or cubes of voxels) by a baseline step by step and
follows the explained score down; insertion starts from the baseline and puts the most important
voxels back. A faithful map gives a small deletion area and a large insertion area. Each curve
has ``steps + 1`` points (0 %, 1/steps, ..., 100 % perturbed), sent through the model
``batch_size`` at a time: ceil((steps + 1) / batch_size) forward calls per curve, not one per
step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from xaimed.engine.patchwise import forward_for
from xaimed.methods.fills import constant_fill

if TYPE_CHECKING:
    from xaimed.evaluate.metric import CaseWork, StoredMap
    from xaimed.evaluate.settings import FaithfulnessSettings

CurveKind = Literal["deletion", "insertion"]


@dataclass(frozen=True)
class Curve:
    """Scores of the explained output against the perturbed fraction of the input."""

    kind: CurveKind
    fractions: np.ndarray
    scores: np.ndarray

    @property
    def auc(self) -> float:
        """Area under the curve over the perturbed fraction in [0, 1] (trapezoidal rule)."""
        return float(np.trapezoid(self.scores, self.fractions))


def unit_ranks(attribution: np.ndarray, group_size: int = 1) -> tuple[np.ndarray, int]:
    """For each voxel, the rank of its unit (0 = most important), and the number of units.

    A unit is a voxel, or with ``group_size`` > 1 a cube of that edge (the last cubes along an
    axis may be smaller) ranked by its mean attribution. Ties keep C order, so the result does
    not depend on the sort implementation.
    """
    a = np.asarray(attribution, dtype=np.float64)
    if group_size == 1:
        order = np.argsort(-a.ravel(), kind="stable")
        ranks = np.empty(a.size, dtype=np.int64)
        ranks[order] = np.arange(a.size)
        return ranks.reshape(a.shape), a.size
    idx = [np.arange(n) // group_size for n in a.shape]
    counts = [int(i[-1]) + 1 for i in idx]
    unit = (idx[0][:, None, None] * counts[1] + idx[1][None, :, None]) * counts[2] + idx[2][
        None, None, :
    ]
    n_units = counts[0] * counts[1] * counts[2]
    means = np.bincount(unit.ravel(), weights=a.ravel(), minlength=n_units) / np.bincount(
        unit.ravel(), minlength=n_units
    )
    order = np.argsort(-means, kind="stable")
    unit_rank = np.empty(n_units, dtype=np.int64)
    unit_rank[order] = np.arange(n_units)
    return unit_rank[unit], n_units


def output_scores(outputs: torch.Tensor, target: int, *, output: str, score: str) -> torch.Tensor:
    """The explained score per sample: the target's probability or its raw output.

    ``output`` says what the model returns (``logits`` or ``probabilities``); one logit is a
    binary classifier, turned into a probability with a sigmoid, as for the prediction.
    """
    flat = outputs.float().reshape(outputs.shape[0], -1)
    if score == "logit" or output == "probabilities":
        return flat[:, target]
    if flat.shape[1] == 1:
        return torch.sigmoid(flat[:, 0])
    return torch.softmax(flat, dim=1)[:, target]


def perturbation_curve(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    attribution: np.ndarray,
    target: int,
    *,
    kind: CurveKind,
    baseline: torch.Tensor,
    steps: int,
    batch_size: int,
    group_size: int = 1,
    output: str = "logits",
    score: str = "probability",
    ends: tuple[float, float] | None = None,
) -> Curve:
    """The deletion or insertion curve of ``attribution`` (spatial, on ``inputs``' grid).

    ``inputs`` and ``baseline`` are (1, C, I, J, K); a voxel is perturbed in every channel at
    once. Step k perturbs the round(k * units / steps) most important units. ``ends``, the
    scores of the unperturbed input and of the baseline (:func:`end_scores`), are the first and
    last points of either curve whatever the map, so a caller with several maps of one input
    passes them once computed and only the steps in between go through the model.
    """
    if tuple(attribution.shape) != tuple(inputs.shape[2:]):
        raise ValueError(f"map shape {attribution.shape} differs from the input's grid")
    ranks, n_units = unit_ranks(attribution, group_size)
    rank_t = torch.from_numpy(ranks).to(inputs.device)
    counts = [round(k * n_units / steps) for k in range(steps + 1)]
    modelled = counts if ends is None else counts[1:-1]
    scores: list[torch.Tensor] = []
    batch = max(1, int(batch_size))
    # A tiled segmentation model recomputes only the patches each step changes.
    forward = forward_for(model, inputs, batch)
    with torch.no_grad():
        for start in range(0, len(modelled), batch):
            n = torch.tensor(modelled[start : start + batch], device=inputs.device)
            perturbed = (rank_t[None] < n[:, None, None, None])[:, None]  # (B, 1, I, J, K)
            if kind == "deletion":
                x = torch.where(perturbed, baseline, inputs)
            else:
                x = torch.where(perturbed, inputs, baseline)
            scores.append(output_scores(forward(x), target, output=output, score=score).cpu())
    fractions = np.asarray(counts, dtype=np.float64) / n_units
    inner = torch.cat(scores).numpy() if scores else np.zeros(0)
    values = inner.astype(np.float64)
    if ends is not None:
        first, last = ends if kind == "deletion" else ends[::-1]
        values = np.concatenate([[first], values, [last]])
    return Curve(kind, fractions, values)


def end_outputs(
    model: torch.nn.Module, inputs: torch.Tensor, baseline: torch.Tensor, *, batch_size: int
) -> torch.Tensor:
    """The model's outputs for the unperturbed input and the baseline, stacked (2, ...): the
    end points of every curve on ``inputs``, for :func:`end_scores`."""
    forward = forward_for(model, inputs, max(1, int(batch_size)))
    both = torch.cat([inputs, baseline.expand_as(inputs)])
    with torch.no_grad():
        if batch_size >= 2:
            return forward(both)
        return torch.cat([forward(both[:1]), forward(both[1:])])


def end_scores(
    outputs: torch.Tensor, target: int, *, output: str, score: str
) -> tuple[float, float]:
    """(unperturbed, baseline) scores of ``target`` from :func:`end_outputs`."""
    first, last = output_scores(outputs, target, output=output, score=score).cpu().tolist()
    return float(first), float(last)


def forward_calls(steps: int, batch_size: int) -> int:
    """Forward calls one curve makes."""
    return math.ceil((steps + 1) / max(1, batch_size))


def compute(work: CaseWork, settings: FaithfulnessSettings) -> None:
    """The Metric protocol: both curves of every map, with their areas."""
    baseline = constant_fill(settings.baseline, work.case.inputs)
    # A segmentation target is already one reduced score per label (a sum or mean over the
    # region, of probabilities when target.score says so); a softmax across labels of those
    # would mean nothing, so the curves follow the explained score itself.
    score = "logit" if work.scorer.reduction.segmentation else settings.score
    forward = work.forward_scorer()  # batch norms folded: one pass less per block
    batch_size = work.case.batch_size or 1
    # The unperturbed input and the baseline are the end points of every map's curves: through
    # the model once per case (on first use) instead of twice per map.
    shared: list[torch.Tensor] = []

    def one(m: StoredMap) -> None:
        if not shared:
            shared.append(
                end_outputs(forward.counting, work.case.inputs, baseline, batch_size=batch_size)
            )
        ends = end_scores(shared[0], m.target, output=forward.output, score=score)
        grid_map = work.case.to_model_grid(m.data)
        for kind in ("deletion", "insertion"):
            curve = perturbation_curve(
                forward.counting, work.case.inputs, grid_map, m.target,
                kind=kind, baseline=baseline, steps=settings.steps,
                batch_size=batch_size, group_size=settings.group_size,
                output=forward.output, score=score, ends=ends,
            )  # fmt: skip
            work.add(m, f"{kind}_auc", curve.auc)
            work.curves.append({
                "case_id": work.case_id, "method": m.method, "target": m.target_name,
                "kind": kind, "fractions": curve.fractions.tolist(),
                "scores": curve.scores.tolist(),
            })  # fmt: skip

    work.each(one)
