"""Explained scalars for segmentation outputs: one label's output reduced over a region.

A model that outputs a map per voxel, (N, L, I, J, K), is wrapped so that it returns one
score per label, (N, L): the label's logits (or probabilities) summed or averaged over a
region. The region is fixed per case before any method runs, so a perturbation changes the
score but not where it is measured: the label's predicted region on the unperturbed input, a
mask file given on the source grid, or the whole volume. Classification outputs, (N, L), pass
through unchanged, so every method family sees the same (N, n_outputs) model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from xaimed.errors import InputError

if TYPE_CHECKING:
    from xaimed.config import TargetSection
    from xaimed.methods.casefiles import CaseFiles
    from xaimed.prediction import Prediction, Target


@dataclass(frozen=True)
class CaseRegions:
    """One case's regions, fixed on its unperturbed input: a new object per case, never changed.

    ``segmentation``: whether the model's output is per voxel (then reduced); ``regions``: (L,
    I, J, K) bool, None for every voxel; ``voxels``: each label's region size.
    """

    segmentation: bool = False
    regions: torch.Tensor | None = None
    voxels: tuple[int, ...] = ()


# Before a case fixes its regions (and for classifiers): outputs pass through unreduced.
PASS_THROUGH = CaseRegions()


class TargetReduction(torch.nn.Module):
    """Wraps a model; reduces per-voxel outputs to one score per label over each label's region.

    The regions are per case: ``regions_of`` computes a case's :class:`CaseRegions` without
    touching the module and ``use`` makes them the ones ``forward`` reduces over (methods call
    the wrapped model with the input alone, so the regions of the case being explained travel
    with the module). A module reused for the next case gets that case's own object; nothing of
    the previous case survives. Until then (and for classification outputs) the wrapper passes
    the model's output through.
    """

    def __init__(self, model: torch.nn.Module, spec: TargetSection, *, output: str) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.output = output  # what the model returns: 'logits' or 'probabilities'
        self.case_regions = PASS_THROUGH

    @property
    def segmentation(self) -> bool:
        """Whether the current case's output is reduced (a per-voxel output)."""
        return self.case_regions.segmentation

    @property
    def regions(self) -> torch.Tensor | None:
        """The current case's (L, I, J, K) regions; None: every voxel."""
        return self.case_regions.regions

    @property
    def voxels(self) -> tuple[int, ...]:
        """The current case's region size per label."""
        return self.case_regions.voxels

    def use(self, case_regions: CaseRegions) -> None:
        """Reduce over ``case_regions`` from now on (the case being explained)."""
        self.case_regions = case_regions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if out.ndim <= 2 or not self.segmentation:
            return out
        return self.reduce(out)

    def reduce(self, out: torch.Tensor) -> torch.Tensor:
        """(N, L, I, J, K) per-voxel outputs -> (N, L) scores."""
        return self.finish(self.box_sums(out, None), tuple(int(n) for n in out.shape[2:]))

    def box_sums(self, out: torch.Tensor, box: tuple[slice, ...] | None) -> torch.Tensor:
        """(N, L): the per-voxel scores of ``out`` summed over each label's region, for the
        voxels of ``box`` only (``out`` holds just those voxels; None: the whole volume).

        Every score is a sum over voxels, so a change confined to a box changes only that
        box's sum: the perturbation engines update scores from it.
        """
        if self.regions is None:
            return self.region_sums(out, None)
        region = self.regions if box is None else self.regions[(slice(None), *box)]
        return self.region_sums(out, region[None])

    def region_sums(self, out: torch.Tensor, region: torch.Tensor | None) -> torch.Tensor:
        """(N, L): the per-voxel scores of ``out`` (N, L, ...) summed where ``region`` (1 or
        N, L, ...) is set (None: everywhere)."""
        if self.spec.score == "probabilities" and self.output == "logits":
            out = torch.sigmoid(out) if out.shape[1] == 1 else torch.softmax(out, dim=1)
        if region is None:
            return out.flatten(2).sum(-1)
        return (out * region.to(out.dtype)).flatten(2).sum(-1)

    @property
    def linear(self) -> bool:
        """Whether the score is a weighted sum of the raw outputs (no per-voxel softmax)."""
        return not (self.spec.score == "probabilities" and self.output == "logits")

    def finish(self, sums: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """(N, L) region sums over a volume of ``shape`` -> scores (divided by the region's
        size for a mean)."""
        if self.spec.reduction != "mean":
            return sums
        if self.regions is None:
            return sums / math.prod(shape)
        count = self.regions.flatten(1).sum(-1).clamp(min=1)
        return sums / count.to(sums.dtype)

    def configure(self, inputs: torch.Tensor, case: CaseFiles) -> None:
        """Find out whether the model segments and, if so, use this case's regions."""
        self.reset()
        with torch.no_grad():
            out = self.model(inputs)
        self.fix_regions(out, inputs, case)

    def reset(self) -> None:
        """Forget the previous case: until ``fix_regions``, outputs pass through unreduced."""
        self.use(PASS_THROUGH)

    def fix_regions(self, out: torch.Tensor, inputs: torch.Tensor, case: CaseFiles) -> torch.Tensor:
        """Use this case's regions, found from the model's raw output ``out`` on the unperturbed
        ``inputs``; returns the scores of that output (reduced for a segmentation).

        Taking the output of a forward pass the caller makes anyway (the prediction) saves a
        second pass per case.
        """
        self.use(self.regions_of(out, inputs, case))
        return self.reduce(out) if self.segmentation else out

    def regions_of(self, out: torch.Tensor, inputs: torch.Tensor, case: CaseFiles) -> CaseRegions:
        """The regions of ``case`` from the model's raw output ``out`` on its unperturbed
        ``inputs`` (the module is left as it is)."""
        if out.ndim <= 2:
            return PASS_THROUGH
        if tuple(out.shape[2:]) != tuple(inputs.shape[2:]):
            raise InputError(
                f"case {case.case_id}: the model's output {tuple(out.shape)} is neither one score "
                f"per class nor a map of the input's size {tuple(inputs.shape[2:])}; it cannot be "
                "explained as a classifier or a segmentation."
            )
        labels = out.shape[1]
        if self.spec.region == "predicted":
            if labels == 1:
                threshold = 0.0 if self.output == "logits" else 0.5
                regions = out[0] > threshold
            else:
                winner = out[0].argmax(dim=0)
                regions = torch.stack([winner == i for i in range(labels)])
        elif self.spec.region == "mask":
            template = case.mask if case.mask is not None else self.spec.mask
            if template is None:  # the config check requires one; a case list may not
                raise InputError(
                    f"case {case.case_id}: target.region is 'mask' but neither target.mask nor "
                    "the case list's mask column gives a mask; set one of them."
                )
            mask = torch.from_numpy(case.labels(template, "target.mask") > 0)
            regions = mask.to(inputs.device)[None].expand(labels, *mask.shape)
        else:
            regions = None
        total = math.prod(int(n) for n in out.shape[2:])
        voxels = (
            (total,) * labels
            if regions is None
            else tuple(int(n) for n in regions.flatten(1).sum(-1))
        )
        return CaseRegions(True, regions, voxels)

    def adjust(self, prediction: Prediction) -> Prediction:
        """For segmentation, 'predicted' is the best-scoring label other than 0 (background)."""
        if not self.segmentation or len(prediction.outputs) < 2:
            return prediction
        scores = prediction.outputs[1:]
        return replace(prediction, predicted=1 + max(range(len(scores)), key=scores.__getitem__))

    def check(self, targets: list[Target], case_id: str) -> None:
        """An empty region would give an all-zero map without saying why; refuse it instead."""
        if not self.segmentation:
            return
        for target in targets:
            if self.voxels[target.index] == 0:
                raise InputError(
                    f"case {case_id}: the region of label {target.name} is empty (target.region: "
                    f"{self.spec.region}); choose another target.class or target.region: volume."
                )

    def sidecar_fields(self) -> dict[str, Any] | None:
        """The reduction, for the sidecar's target (None for a classifier)."""
        if not self.segmentation:
            return None
        return {
            "region": self.spec.region,
            "mask": self.spec.mask,
            "reduction": self.spec.reduction,
            "score": self.spec.score,
            "region_voxels": list(self.voxels),
        }
