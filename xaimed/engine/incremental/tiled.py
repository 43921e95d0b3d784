"""The incremental engine inside the patches of a tiled pass: exact window scores of a tiled
segmentation, computing per patch only the box a window changes.

A tiled score is linear in the patches' outputs: the blended map is ``sum_p w_p * out_p / norm``
and the explained score sums it over each label's region, so patch ``p`` adds
``sum(coef_p * out_p)`` with ``coef_p = w_p / norm * region`` fixed by the layout. A window then
changes the score by ``sum_p sum(coef_p * (new_p - old_p))`` over the patches it touches, and
inside each patch only over the output box its change reaches. So the patches are taken one at a
time: the patch's unoccluded forward pass is recorded (all of them together are one tiled pass,
which also gives the reference score), and every window that touches the patch goes through the
incremental engine (:mod:`xaimed.engine.incremental.runner`) in batches, returning its change of
the score; the patch's record is dropped before the next. The scores equal those of whole tiled
passes of the occluded inputs up to floating-point rounding.

Scores that are not linear in the outputs (probabilities from a per-voxel softmax of blended
logits) do not split over patches; they raise NotIncremental and the patch-level engine
(:mod:`xaimed.engine.patchwise`) recomputes whole patches instead.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from xaimed.engine.counting import CountingModel
from xaimed.engine.incremental.graph import (
    FrozenNormRule,
    NotIncremental,
    reference_graph,
    trace,
)
from xaimed.engine.incremental.normshift import record_with_shifts
from xaimed.engine.incremental.runner import IncrementalScorer, WeightedRegions
from xaimed.engine.targets import TargetReduction
from xaimed.engine.tiling import TiledInference, TilePlan


@dataclass
class TiledIncrementalScorer:
    """Target scores of occluded copies of ``x`` through a tiled, region-reduced network.

    Build with :func:`build_tiled_scorer`; ``reference`` is the unoccluded score, ``scores``
    those of windows, ``sidecar_fields()`` what the sidecar says.
    """

    counting: CountingModel | None
    reduction: TargetReduction
    tiled: TiledInference
    module: torch.fx.GraphModule
    x: torch.Tensor
    fill: torch.Tensor
    target: int
    batch_size: int
    plan: TilePlan
    autocast_dtype: torch.dtype | None = None
    freeze_norm: bool = False
    # With frozen norms: add the first-order correction for their statistics' shift.
    correct_norm_shift: bool = True
    windows: int = 0
    patches_recorded: int = 0
    patch_windows: int = 0
    frozen: set[str] = field(default_factory=set)
    corrected: bool = False
    # Seconds spent recording patches (and, with the correction, their backward pass): a
    # benchmark separates this once-per-patch cost from the windows' own.
    record_s: float = 0.0
    whole_from: dict[str, dict[str, str]] = field(default_factory=dict)
    _reference: torch.Tensor | None = None  # (L,) float64 region sums of the unoccluded input
    _work: float = 0.0  # in whole tiled passes

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.x.shape[2:])

    @property
    def reference(self) -> torch.Tensor:
        """The unoccluded input's target score (a 0-d float64 tensor)."""
        if self._reference is None:
            self._run([], [], [])
        return self._finish(self._reference[None])[0]

    def _finish(self, sums: torch.Tensor) -> torch.Tensor:
        return self.reduction.finish(sums, self.dims)[:, self.target]

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.x.device.type, dtype=self.autocast_dtype)

    def _coefficients(self, p: int) -> torch.Tensor:
        """(L, *patch): what each output voxel of patch ``p`` adds to each label's sum."""
        box = self.plan.boxes[p]
        coef = (self.plan.weights.double() / self.plan.norm[box].double())[None]
        regions = self.reduction.regions
        if regions is None:
            return coef
        return regions[(slice(None), *box)].double() * coef

    def scores(
        self, lo: torch.Tensor, hi: torch.Tensor, *, label: str, threshold: float
    ) -> torch.Tensor:
        """Target scores (N,) float64 of ``x`` with the boxes ``[lo, hi)`` (N, 3) filled;
        ``threshold`` caps changed boxes inside each patch (1: exact), as
        :meth:`IncrementalScorer.scores` does."""
        deltas = torch.zeros(len(lo), dtype=torch.float64)
        patches: list[list[int]] = []
        local_lo: list[torch.Tensor] = []
        local_hi: list[torch.Tensor] = []
        for box in self.plan.boxes:
            start = torch.tensor([s.start for s in box])
            stop = torch.tensor([s.stop for s in box])
            a, b = torch.maximum(lo, start), torch.minimum(hi, stop)
            inside = (b > a).all(dim=1).nonzero()[:, 0]
            patches.append(inside.tolist())
            local_lo.append(a[inside] - start)
            local_hi.append(b[inside] - start)
        sums = self._run(patches, local_lo, local_hi, deltas, threshold)
        self.windows += len(lo)
        if self.counting is not None:
            self.counting.count.add(samples=len(lo), calls=0, equivalent=0.0)
        rows = sums[None].expand(len(lo), -1).clone()
        rows[:, self.target] += deltas.to(rows.device)
        return self._finish(rows)

    def _run(
        self,
        patches: list[list[int]],
        local_lo: list[torch.Tensor],
        local_hi: list[torch.Tensor],
        deltas: torch.Tensor | None = None,
        threshold: float = 1.0,
    ) -> torch.Tensor:
        """Record every patch, add each window's change of the score to ``deltas``; returns
        the unoccluded region sums (L,) float64."""
        total: torch.Tensor | None = None
        for p, box in enumerate(self.plan.boxes):
            mine = patches[p] if patches else []
            if self._reference is not None and not mine:
                continue  # the reference is known and no window touches this patch
            region = (slice(None), slice(None), *box)
            x, fill = self.x[region], self.fill[region]
            started = time.perf_counter()
            coef = self._coefficients(p)
            shifts: dict = {}
            with self._autocast():
                if self.freeze_norm and self.correct_norm_shift and mine and deltas is not None:
                    # The recording also gives the frozen norms' first-order correction.
                    # One row per label with regions; one row for all labels with the whole
                    # volume (no regions), as the region sums broadcast it.
                    weights = coef[self.target if len(coef) > 1 else 0].to(torch.float32)

                    def score(o: torch.Tensor, w: torch.Tensor = weights) -> torch.Tensor:
                        return (o[0, self.target] * w).sum()

                    graph, shifts = record_with_shifts(self.module, x, score, maps=True)
                    self.corrected = self.corrected or bool(shifts)
                else:
                    graph = reference_graph(self.module, x, maps=True, freeze_norm=self.freeze_norm)
            self.patches_recorded += 1
            self._work += 1 / len(self.plan.boxes)
            if self.counting is not None:
                # The first recording of all patches is the unoccluded input's pass.
                first = self._reference is None and p == 0
                self.counting.count.add(
                    samples=int(first), calls=1, equivalent=1 / len(self.plan.boxes)
                )
            out = graph.cache[graph.nodes[-1]]
            if p == 0:
                self._check(x, out)
            part = (out[0].double() * coef).flatten(1).sum(-1)
            total = part if total is None else total + part
            self.record_s += time.perf_counter() - started
            if deltas is None or not mine:
                continue
            scorer = IncrementalScorer(
                graph, x, fill, self.target, self.batch_size,
                autocast_dtype=self.autocast_dtype,
                reducer=WeightedRegions(coef.to(out.dtype)), deltas=True, shifts=shifts,
            )  # fmt: skip
            change = scorer.scores(
                local_lo[p], local_hi[p], label=f"patch {p + 1}", threshold=threshold
            )
            deltas[torch.tensor(mine)] += change.double().cpu()
            self.patch_windows += len(mine)
            self._work += scorer.full_pass_equivalent / len(self.plan.boxes)
            if self.counting is not None:
                self.counting.count.add(
                    samples=0,
                    calls=scorer.batches,
                    equivalent=scorer.full_pass_equivalent / len(self.plan.boxes),
                )
            self.whole_from.update(scorer.whole_from)
            self.frozen.update(
                n.name for n, r in graph.rules.items() if isinstance(r, FrozenNormRule)
            )
        if self._reference is None:
            if total is None:
                raise NotIncremental("no patch covers the input")
            self._reference = total
        return self._reference

    def _check(self, x: torch.Tensor, traced: torch.Tensor) -> None:
        """The traced graph must reproduce the network's own output on a patch."""
        with torch.no_grad(), self._autocast():
            own = self.tiled.run_model(x)
        scale = max(1.0, float(own.abs().max()))
        if float((own.float() - traced.float()).abs().max()) > 1e-3 * scale:
            raise NotIncremental("the traced graph does not reproduce the model's output")

    def sidecar_fields(self) -> dict[str, Any]:
        """What the sidecar says about the computation."""
        return {
            "windows_computed": self.windows,
            "tiled": {
                "patches_per_pass": len(self.plan.boxes),
                "patches_recorded": self.patches_recorded,
                "window_patches": self.patch_windows,
                "patch_batch": self.batch_size,
            },
            "frozen_norm_statistics": sorted(self.frozen),
            "norm_statistics_correction": "first_order" if self.corrected else None,
            "full_pass_equivalent": round(self._work, 3),
            "whole_maps_from": [{"node": name, **about} for name, about in self.whole_from.items()],
        }


def build_tiled_scorer(
    model: torch.nn.Module,
    x: torch.Tensor,
    fill: torch.Tensor,
    *,
    target: int,
    batch_size: int,
    freeze_norm: bool = False,
    network: torch.nn.Module | None = None,
) -> TiledIncrementalScorer:
    """The incremental scorer of a scored tiled segmentation ``model`` (counting -> target
    reduction -> tiling); NotIncremental (with the reason) when it does not qualify.

    ``network``, when known, must be the model inside the tiling.
    """
    from xaimed.engine.patchwise import tiled_parts

    try:
        counting, reduction, tiled = tiled_parts(model)
    except ValueError as exc:
        raise NotIncremental(str(exc)) from None
    if not reduction.linear:
        raise NotIncremental(
            "the score (probabilities of blended logits) does not split over patches"
        )
    if network is not None and tiled.model is not network:
        raise NotIncremental("the scored model wraps the network in an unknown way")
    dims = tuple(int(n) for n in x.shape[2:])
    plan = tiled.plan(dims, x.device)
    if plan is None:
        raise NotIncremental("the input fits in one patch")
    module = trace(tiled.model)
    scorer = TiledIncrementalScorer(
        counting, reduction, tiled, module, x.detach(), fill.detach(), target,
        # Patches are smaller than the volume: as many windows per call as whole inputs fit.
        max(1, batch_size * (math.prod(dims) // math.prod(plan.patch_shape))), plan,
        autocast_dtype=counting.autocast_dtype, freeze_norm=freeze_norm,
    )  # fmt: skip
    return scorer
