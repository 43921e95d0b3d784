"""Patch-incremental perturbation under tiling: recompute only the patches a perturbation touches.

With sliding-window inference a score is a sum over voxels of the blended output,
``sum_p weights_p * out_p / norm``, and the weights and ``norm`` depend on the layout only. One
unoccluded tiled pass records every patch's output (or, when the score is linear in the outputs,
just every patch's contribution to each label's score); a perturbed input then needs only the
patches whose input it changes: their new outputs replace the old ones in the blend, and the
score is updated over the box those patches cover. The result equals a complete tiled pass of
the perturbed input up to floating-point rounding (the same patch outputs, summed in another
order). The touched patches of a whole batch of perturbations go through the network together.

Any perturbation qualifies (windows, feature groups, coalitions, deletion curves): a patch is
touched when any of its input voxels differs from the unperturbed input.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from xaimed.engine.counting import CountingModel
from xaimed.engine.scoring import scored_parts
from xaimed.engine.targets import TargetReduction
from xaimed.engine.tiling import TiledInference, TilePlan

if TYPE_CHECKING:
    from xaimed.engine.slicewise import SliceScores

log = logging.getLogger("xaimed")


def tiled_parts(model: torch.nn.Module) -> tuple[CountingModel, TargetReduction, TiledInference]:
    """The wrappers of a scored tiled segmentation model, or ValueError saying why not."""
    counting, reduction = scored_parts(model)
    if not reduction.segmentation:
        raise ValueError("the explained score does not reduce a segmentation")
    tiled = reduction.model
    if not isinstance(tiled, TiledInference):
        raise ValueError("tiling is not configured")
    return counting, reduction, tiled


@dataclass
class PatchwiseScores:
    """Scores (B, L) of perturbed copies of ``x``, recomputing only the patches they touch.

    Build with :func:`build`; ``rows(batch)`` returns what the scored model would return for
    ``batch``, ``sidecar_fields()`` what the sidecar says.
    """

    counting: CountingModel
    reduction: TargetReduction
    tiled: TiledInference
    x: torch.Tensor
    plan: TilePlan
    patches_per_call: int
    # Linear scores: each patch's contribution to every label's region sum, (P, L) float64.
    contributions: torch.Tensor | None = None
    # Otherwise: every patch's output (P, L, *patch) and the blended numerator (1, L, *dims).
    outputs: torch.Tensor | None = None
    numerator: torch.Tensor | None = None
    reference_sums: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    patches_run: int = 0
    perturbations: int = 0
    calls: int = 0
    name: str = "patch_incremental"

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.x.shape[2:])

    def _run(self, inputs: torch.Tensor) -> torch.Tensor:
        """The network on a stack of patches, (P, C, *patch) -> (P, L, *patch), half
        precision widened to float32."""
        with torch.no_grad(), self.counting.autocast(self.x):
            out = self.tiled.run_model(inputs)
        self.calls += 1
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out

    def _coefficients(self, p: int) -> torch.Tensor:
        """(L or 1, *patch): how much each output voxel of patch ``p`` adds to the region sums."""
        box = self.plan.boxes[p]
        coef = self.plan.weights.double() / self.plan.norm[box].double()
        regions = self.reduction.regions
        if regions is None:
            return coef[None]
        return regions[(slice(None), *box)].double() * coef[None]

    def _contribution(self, p: int, out: torch.Tensor) -> torch.Tensor:
        """(L,) float64: patch ``p``'s output ``out`` (L, *patch) summed into the region sums."""
        return (out.double() * self._coefficients(p)).flatten(1).sum(-1)

    def record_reference(self) -> None:
        """One unoccluded tiled pass: every patch's output or contribution."""
        boxes = self.plan.boxes
        labels = None
        contributions: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []
        for first in range(0, len(boxes), self.patches_per_call):
            chunk = list(range(first, min(len(boxes), first + self.patches_per_call)))
            stack = torch.stack([self.x[(0, slice(None), *boxes[p])] for p in chunk])
            out = self._run(stack)
            labels = out.shape[1]
            for i, p in enumerate(chunk):
                if self.reduction.linear:
                    contributions.append(self._contribution(p, out[i]))
                else:
                    outputs.append(out[i])
        self.patches_run += len(boxes)
        if self.reduction.linear:
            self.contributions = torch.stack(contributions)
            self.reference_sums = self.contributions.sum(0)
        else:
            self.outputs = torch.stack(outputs)
            numerator = self.outputs.new_zeros((1, int(labels or 0), *self.dims))
            for p, box in enumerate(boxes):
                numerator[(0, slice(None), *box)] += self.outputs[p] * self.plan.weights
            self.numerator = numerator
            blended = numerator / self.plan.norm
            self.reference_sums = self.reduction.box_sums(blended, None)[0].double()

    def touched(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, P) bool: which patches' inputs each perturbed copy changes."""
        changed = (batch != self.x).any(dim=1)  # (B, *dims)
        return torch.stack(
            [changed[(slice(None), *box)].flatten(1).any(1) for box in self.plan.boxes], dim=1
        )

    def rows(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, L): the scored model's output for ``batch`` (B, C, *dims)."""
        calls = self.calls
        touched = self.touched(batch).cpu()
        pairs = touched.nonzero().tolist()  # (b, p), b-major
        new: dict[tuple[int, int], torch.Tensor] = {}
        for first in range(0, len(pairs), self.patches_per_call):
            chunk = pairs[first : first + self.patches_per_call]
            stack = torch.stack([batch[(b, slice(None), *self.plan.boxes[p])] for b, p in chunk])
            out = self._run(stack)
            for i, (b, p) in enumerate(chunk):
                new[(b, p)] = out[i]
        self.patches_run += len(pairs)
        self.perturbations += len(batch)
        sums = []
        for b in range(len(batch)):
            mine = touched[b].nonzero()[:, 0].tolist()
            sums.append(self._updated(mine, [new[(b, p)] for p in mine]))
        result = torch.stack(sums).to(self.x.device)
        self.counting.count.add(
            samples=len(batch),
            calls=self.calls - calls,
            equivalent=len(pairs) / len(self.plan.boxes),
        )
        return self.reduction.finish(result.to(self.plan.norm.dtype), self.dims)

    def _updated(self, patches: list[int], outs: list[torch.Tensor]) -> torch.Tensor:
        """(L,) float64 region sums with ``patches``' outputs replaced by ``outs``."""
        if not patches:
            return self.reference_sums
        if self.contributions is not None:
            change = sum(
                (
                    self._contribution(p, o) - self.contributions[p]
                    for p, o in zip(patches, outs, strict=True)
                ),
                torch.zeros_like(self.reference_sums),
            )
            return self.reference_sums + change
        if self.outputs is None or self.numerator is None:
            raise RuntimeError("patchwise scores used before record_reference()")
        boxes = [self.plan.boxes[p] for p in patches]
        lo = [min(b[a].start for b in boxes) for a in range(3)]
        hi = [max(b[a].stop for b in boxes) for a in range(3)]
        region = tuple(slice(s, e) for s, e in zip(lo, hi, strict=True))
        numerator = self.numerator[(slice(None), slice(None), *region)].clone()
        for p, box, out in zip(patches, boxes, outs, strict=True):
            local = tuple(slice(b.start - s, b.stop - s) for b, s in zip(box, lo, strict=True))
            numerator[(0, slice(None), *local)] += (out - self.outputs[p]) * self.plan.weights
        norm = self.plan.norm[region]
        old = self.numerator[(slice(None), slice(None), *region)] / norm
        before = self.reduction.box_sums(old, region)[0].double()
        after = self.reduction.box_sums(numerator / norm, region)[0].double()
        return self.reference_sums + after - before

    def sidecar_fields(self) -> dict[str, Any]:
        """What the sidecar says about the patch-incremental computation."""
        per_pass = len(self.plan.boxes)
        return {
            "patches_per_pass": per_pass,
            "patches_computed": self.patches_run,
            "patch_batch": self.patches_per_call,
            "full_pass_equivalent": round(self.patches_run / per_pass, 3),
        }


def build(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> PatchwiseScores:
    """The patch-incremental scorer of ``model`` (counting -> target reduction -> tiling) on
    ``x``, its reference pass done; ValueError (with the reason) when ``model`` is not tiled
    or ``x`` fits in one patch."""
    counting, reduction, tiled = tiled_parts(model)
    dims = tuple(int(n) for n in x.shape[2:])
    plan = tiled.plan(dims, x.device)
    if plan is None:
        raise ValueError("the input fits in one patch")
    # As many patches per call as the tiled forward sends for ``batch_size`` whole inputs.
    per_call = max(1, batch_size * (math.prod(dims) // math.prod(plan.patch_shape)))
    scores = PatchwiseScores(counting, reduction, tiled, x.detach(), plan, per_call)
    scores.record_reference()
    counting.count.add(samples=1, calls=scores.calls, equivalent=1.0)
    return scores


def partial_scores(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int
) -> PatchwiseScores | SliceScores | None:
    """The engine that scores perturbed copies of ``x`` by recomputing only what they change:
    patches of a tiled segmentation model, slices of a slice-wise model; None for others."""
    from xaimed.engine.slicewise import build as build_slices

    for make in (build, build_slices):
        try:
            return make(model, x, batch_size)
        except ValueError as exc:
            log.debug("%s not used: %s", make.__module__, exc)
    return None


def forward_for(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """What scores perturbed copies of ``x`` without gradients: the patch- or slice-incremental
    rows where :func:`partial_scores` has an engine, ``model`` itself otherwise."""
    engine = partial_scores(model, x, batch_size)
    return model if engine is None else engine.rows
