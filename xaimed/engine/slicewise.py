"""Slice-incremental perturbation for slice-wise (2.5D) models: re-run only the touched slices.

A slice-wise model's score is built from per-slice outputs: a 2D classifier's volume score is
the mean or maximum of its per-slice scores, a 2D segmentation network's region score is a sum
over voxels, hence a sum of per-slice region sums. One unperturbed pass records every slice's
score (or region sums); a perturbed input then needs only the slices whose network input it
changes, which are the slices it changes and those whose K neighbours reach into a change. Their
new values replace the recorded ones before the reduction, so the score equals a complete pass
of the perturbed input up to floating-point rounding. The touched slices of a whole batch of
perturbations go through the network together, ``slices_per_call`` at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from xaimed.engine.counting import CountingModel
from xaimed.engine.scoring import scored_parts
from xaimed.engine.targets import TargetReduction
from xaimed.models.slicewise import SliceWise


def sliced_parts(model: torch.nn.Module) -> tuple[CountingModel, TargetReduction, SliceWise]:
    """The wrappers of a scored slice-wise model, or ValueError saying why not."""
    counting, reduction = scored_parts(model)
    sliced = reduction.model
    if not isinstance(sliced, SliceWise):
        raise ValueError("the model is not slice-wise")
    if sliced.axis is None:
        raise ValueError("the slice-wise model has no case grid yet")
    return counting, reduction, sliced


@dataclass
class SliceScores:
    """Scores (B, L) of perturbed copies of ``x``, re-running only the slices they touch.

    Build with :func:`build`; ``rows(batch)`` returns what the scored model would return for
    ``batch``, ``sidecar_fields()`` what the sidecar says.
    """

    counting: CountingModel
    reduction: TargetReduction
    sliced: SliceWise
    x: torch.Tensor
    # Per slice of the unperturbed input: the 2D network's scores (S, L) for a classifier, the
    # slice's region sums (S, L) float64 for a segmentation.
    reference: torch.Tensor
    slices_run: int = 0
    calls: int = 0
    name: str = "slice_incremental"

    @property
    def slices(self) -> int:
        """Slices per pass."""
        return int(self.reference.shape[0])

    def per_slice(self, batch: torch.Tensor, volumes: torch.Tensor, slices: torch.Tensor):
        """(n, L): slice ``slices[i]`` of ``batch[volumes[i]]`` through the network, reduced to
        its per-slice value (scores, or region sums for a segmentation)."""
        xs = self.sliced.moved(batch)
        step = self.sliced.slices_per_call
        parts = []
        for first in range(0, len(slices), step):
            chunk = slice(first, first + step)
            with torch.no_grad(), self.counting.autocast(self.x):
                out = self.sliced.network(self.sliced.stacks(xs, volumes[chunk], slices[chunk]))
            self.calls += 1
            out = out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
            parts.append(self._values(out, slices[chunk]))
        self.slices_run += len(slices)
        return torch.cat(parts) if parts else self.reference[:0]

    def _values(self, out: torch.Tensor, slices: torch.Tensor) -> torch.Tensor:
        if not self.reduction.segmentation:
            return out.reshape(out.shape[0], -1)
        # (n, L, P, Q) maps: the region sums of each slice, the score's share of that slice.
        regions = self.reduction.regions
        if regions is None:
            return self.reduction.region_sums(out, None).double()
        axis = self.sliced.axis if self.sliced.axis is not None else 0
        moved = regions.movedim(1 + axis, 1)  # (L, S, P, Q)
        mine = moved[:, slices.to(moved.device)].movedim(1, 0)
        return self.reduction.region_sums(out, mine).double()

    def touched(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, S) bool: the slices whose network input each perturbed copy changes."""
        changed = self.sliced.moved((batch != self.x).any(dim=1, keepdim=True))
        per_slice = changed.flatten(3).any(-1)[:, 0].float()  # (B, S)
        k = self.sliced.context
        if k == 0:
            return per_slice > 0
        # Slice s reads slices s-K..s+K (clamped at the edges, so never beyond them).
        return F.max_pool1d(per_slice[:, None], 2 * k + 1, stride=1, padding=k)[:, 0] > 0

    def rows(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, L): the scored model's output for ``batch`` (B, C, I, J, K)."""
        calls = self.calls
        touched = self.touched(batch)
        pairs = touched.nonzero()
        new = self.per_slice(batch, pairs[:, 0], pairs[:, 1])
        values = self.reference[None].expand(len(batch), -1, -1).clone()
        values[pairs[:, 0], pairs[:, 1]] = new.to(values.dtype)
        self.counting.count.add(
            samples=len(batch), calls=self.calls - calls, equivalent=len(pairs) / self.slices
        )
        return self._reduce(values)

    def _reduce(self, values: torch.Tensor) -> torch.Tensor:
        """(B, S, L) per-slice values -> (B, L) scores, as the complete model reduces them."""
        if self.reduction.segmentation:
            dims = tuple(int(n) for n in self.x.shape[2:])
            return self.reduction.finish(values.sum(1).float(), dims)
        return self.sliced.assemble(values, self.x)

    def sidecar_fields(self) -> dict[str, Any]:
        """What the sidecar says about the slice-incremental computation."""
        return {
            "slices_per_pass": self.slices,
            "slices_computed": self.slices_run,
            "slices_per_call": self.sliced.slices_per_call,
            "full_pass_equivalent": round(self.slices_run / self.slices, 3),
        }


def build(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> SliceScores:
    """The slice-incremental scorer of ``model`` (counting -> target reduction -> slice-wise)
    on ``x``, its reference pass done; ValueError (with the reason) when ``model`` is not a
    slice-wise model."""
    counting, reduction, sliced = sliced_parts(model)
    x = x.detach()
    empty = torch.zeros(0)
    scores = SliceScores(counting, reduction, sliced, x, empty)
    slices = sliced.moved(x).shape[2]
    scores.reference = scores.per_slice(x, torch.zeros(slices, dtype=torch.long),
                                        torch.arange(slices))  # fmt: skip
    scores.slices_run = 0
    counting.count.add(samples=1, calls=scores.calls, equivalent=1.0)
    return scores
