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
) -> Curve:
    """The deletion or insertion curve of ``attribution`` (spatial, on ``inputs``' grid).

    ``inputs`` and ``baseline`` are (1, C, I, J, K); a voxel is perturbed in every channel at
    once. Step k perturbs the round(k * units / steps) most important units.
    """
    if tuple(attribution.shape) != tuple(inputs.shape[2:]):
        raise ValueError(f"map shape {attribution.shape} differs from the input's grid")
    ranks, n_units = unit_ranks(attribution, group_size)
    rank_t = torch.from_numpy(ranks).to(inputs.device)
    counts = [round(k * n_units / steps) for k in range(steps + 1)]
    scores: list[torch.Tensor] = []
    batch = max(1, int(batch_size))
    # A tiled segmentation model recomputes only the patches each step changes.
    forward = forward_for(model, inputs, batch)
    with torch.no_grad():
        for start in range(0, steps + 1, batch):
            n = torch.tensor(counts[start : start + batch], device=inputs.device)
            perturbed = (rank_t[None] < n[:, None, None, None])[:, None]  # (B, 1, I, J, K)
            if kind == "deletion":
                x = torch.where(perturbed, baseline, inputs)
            else:
                x = torch.where(perturbed, inputs, baseline)
            scores.append(output_scores(forward(x), target, output=output, score=score).cpu())
    fractions = np.asarray(counts, dtype=np.float64) / n_units
    return Curve(kind, fractions, torch.cat(scores).numpy().astype(np.float64))


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

    def one(m: StoredMap) -> None:
        grid_map = work.case.to_model_grid(m.data)
        for kind in ("deletion", "insertion"):
            curve = perturbation_curve(
                forward.counting, work.case.inputs, grid_map, m.target,
                kind=kind, baseline=baseline, steps=settings.steps,
                batch_size=work.case.batch_size or 1, group_size=settings.group_size,
                output=forward.output, score=score,
            )  # fmt: skip
            work.add(m, f"{kind}_auc", curve.auc)
            work.curves.append({
                "case_id": work.case_id, "method": m.method, "target": m.target_name,
                "kind": kind, "fractions": curve.fractions.tolist(),
                "scores": curve.scores.tolist(),
            })  # fmt: skip

    work.each(one)
