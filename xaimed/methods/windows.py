"""How occlusion windows (and grid feature groups, which are boxes too) get their scores.

Two engines: ``plain`` makes every occluded copy of the input and runs the whole model on it
(batched, :class:`xaimed.engine.perturb.Evaluator`); ``incremental`` recomputes only what each
window changes (:mod:`xaimed.engine.incremental`). ``auto`` takes the incremental engine where
the model allows it and the plain one otherwise, with a log line saying why. Both give the same
scores up to floating-point rounding.

The approximate mode trades exactness for time: ``projective_threshold`` caps how far a
window's change may spread through the incremental engine's layers, and ``refine`` scores
coarse windows first and only the fine windows where the coarse map is strong; the others get
the coarse map's estimate.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from xaimed.errors import MethodError
from xaimed.methods.groupings import Size, per_axis

if TYPE_CHECKING:
    import torch

    from xaimed.methods.context import MethodContext

log = logging.getLogger("xaimed")

Engine = Literal["plain", "auto", "incremental"]

ENGINE_DESCRIPTION = (
    "plain: a whole forward pass per window; incremental: recompute only what each window "
    "changes (an error where the model does not allow it); auto: incremental where the model "
    "allows it, else plain."
)


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start of every window along one axis: multiples of the stride, Captum's count."""
    window = min(window, size)
    return [i * stride for i in range(math.ceil((size - window) / stride) + 1)]


class Refine(BaseModel):
    """Coarse windows first; fine windows only where the coarse map is strong."""

    model_config = ConfigDict(extra="forbid")

    window: Size | None = Field(
        None, description="Coarse window in voxels (stride = window); none: twice the window."
    )
    top_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        0.25, description="Share of the fine windows computed, where the coarse map is strongest."
    )


class Approximate(BaseModel):
    """Opt-in approximations of the occlusion map (recorded in the sidecar)."""

    model_config = ConfigDict(extra="forbid")

    projective_threshold: Annotated[float, Field(gt=0, le=1)] = Field(
        1.0,
        description=(
            "Incremental engine: cap each layer's changed box at this fraction of the map per "
            "axis; 1 = exact."
        ),
    )
    refine: Refine | None = Field(None, description="Adaptive refinement; none by default.")
    freeze_norm_statistics: bool = Field(
        False,
        description=(
            "Incremental engine: instance / group norm use the unoccluded pass's statistics, "
            "so a window's change stays local through them."
        ),
    )


class WindowScores(Protocol):
    """Scores of the input with boxes replaced by the fill."""

    reference: torch.Tensor

    def scores(
        self, lo: torch.Tensor, hi: torch.Tensor, *, label: str, exact: bool = False
    ) -> torch.Tensor: ...

    def sidecar_fields(self) -> dict[str, Any]: ...


class PlainWindows:
    """Whole forward passes of occluded copies, batched by the Evaluator."""

    def __init__(self, ctx: MethodContext, fill: torch.Tensor, *, patchwise: bool = False) -> None:
        from xaimed.engine.perturb import Evaluator

        self.x = ctx.inputs.detach()
        self.fill = fill
        self.evaluator = Evaluator(
            ctx.model, ctx.target, ctx.batch_size, progress=ctx.progress,
            inputs=self.x, patchwise=patchwise,
        )  # fmt: skip
        self.reference = self.evaluator.score(self.x)[0]

    def scores(
        self, lo: torch.Tensor, hi: torch.Tensor, *, label: str, exact: bool = False
    ) -> torch.Tensor:
        x, fill = self.x, self.fill
        spans = [
            tuple(slice(int(a), int(b)) for a, b in zip(l3, h3, strict=True))
            for l3, h3 in zip(lo.tolist(), hi.tolist(), strict=True)
        ]

        def build(start: int, stop: int) -> torch.Tensor:
            batch = x.expand(stop - start, *x.shape[1:]).clone()
            for row, box in enumerate(spans[start:stop]):
                batch[(row, slice(None), *box)] = fill[(0, slice(None), *box)]
            return batch

        return self.evaluator.scores(len(spans), build, label=label)

    def sidecar_fields(self) -> dict[str, Any]:
        return {
            "perturbations": self.evaluator.samples,
            "batch_size": self.evaluator.batch_size,
            "out_of_memory_backoffs": self.evaluator.backoffs,
            **self.evaluator.engine_fields(),
        }


class _ScorerWindows:
    """What both incremental window engines share: scoring calls that hand the engine's own
    projective threshold to its scorer, and the scorer's sidecar record."""

    scorer: Any
    threshold: float

    def scores(
        self, lo: torch.Tensor, hi: torch.Tensor, *, label: str, exact: bool = False
    ) -> torch.Tensor:
        """``exact`` ignores the projective threshold for these windows."""
        return self.scorer.scores(lo, hi, label=label, threshold=1.0 if exact else self.threshold)

    def sidecar_fields(self) -> dict[str, Any]:
        return self.scorer.sidecar_fields()


class IncrementalWindows(_ScorerWindows):
    """The incremental engine; the reference score still comes from one counted model pass."""

    def __init__(
        self, ctx: MethodContext, fill: torch.Tensor, threshold: float, freeze_norm: bool = False
    ) -> None:
        from xaimed.engine.counting import CountingModel
        from xaimed.engine.incremental import NotIncremental, build_incremental_scorer, network_of
        from xaimed.engine.perturb import Evaluator

        # The approximation is this engine's, fixed here and handed to every scoring call.
        self.threshold = threshold
        network, autocast, reducer = network_of(ctx)
        x = ctx.inputs.detach()
        count = ctx.model.count if isinstance(ctx.model, CountingModel) else None
        self.scorer = build_incremental_scorer(
            network,
            x,
            fill,
            target=ctx.target,
            batch_size=ctx.batch_size,
            autocast_dtype=autocast,
            progress=ctx.progress,
            count=count,
            reducer=reducer,
            freeze_norm=freeze_norm,
        )
        # The reference goes through the scored model, as with the plain engine.
        evaluator = Evaluator(ctx.model, ctx.target, ctx.batch_size, progress=ctx.progress)
        self.reference = evaluator.score(x)[0]
        # The recorded pass is a real forward pass of the network on one input: count it.
        if count is not None:
            count.add(samples=1, calls=1, equivalent=1.0)
        cached = self.scorer.graph.cache[self.scorer.graph.nodes[-1]]
        if reducer is not None:
            cached = reducer.reduce(cached)
        own = cached.reshape(1, -1)[0, ctx.target].float()
        scale = max(1.0, abs(float(self.reference)))
        if abs(float(own) - float(self.reference)) > 1e-3 * scale:
            raise NotIncremental("the traced graph does not reproduce the model's score")


class TiledIncrementalWindows(_ScorerWindows):
    """The incremental engine inside every patch of a tiled segmentation."""

    def __init__(
        self, ctx: MethodContext, fill: torch.Tensor, threshold: float, freeze_norm: bool = False
    ) -> None:
        from xaimed.engine.incremental.tiled import build_tiled_scorer

        if ctx.is_script:
            from xaimed.engine.incremental import NotIncremental

            raise NotIncremental("a TorchScript model has no traceable Python forward")
        self.threshold = threshold
        self.scorer = build_tiled_scorer(
            ctx.model, ctx.inputs, fill, target=ctx.target, batch_size=ctx.batch_size,
            freeze_norm=freeze_norm, network=ctx.network,
        )  # fmt: skip

    @property
    def reference(self) -> torch.Tensor:
        return self.scorer.reference


def _incremental(
    ctx: MethodContext, fill: torch.Tensor, threshold: float, freeze_norm: bool
) -> WindowScores:
    """The incremental engine that fits the scored model: inside the patches of a tiled
    pass, or over the whole input."""
    from xaimed.engine.patchwise import tiled_parts

    try:
        tiled_parts(ctx.model)
    except ValueError:
        return IncrementalWindows(ctx, fill, threshold, freeze_norm)
    return TiledIncrementalWindows(ctx, fill, threshold, freeze_norm)


def window_scores(
    ctx: MethodContext,
    engine: Engine,
    fill: torch.Tensor,
    *,
    method: str,
    threshold: float = 1.0,
    freeze_norm: bool = False,
) -> tuple[WindowScores, dict[str, Any]]:
    """The engine that scores windows, and its sidecar record (engine used, why not another)."""
    from xaimed.engine.incremental import NotIncremental

    record: dict[str, Any] = {"engine_requested": engine}
    if engine != "plain":
        try:
            scorer = _incremental(ctx, fill, threshold, freeze_norm)
        except NotIncremental as exc:
            if engine == "incremental":
                raise MethodError(
                    f"{method} with engine: incremental cannot run on this model ({exc}); use "
                    "engine: auto or plain."
                ) from None
            plain = PlainWindows(ctx, fill, patchwise=True)
            partial = plain.evaluator.engine_fields()
            if partial:
                # Tiled or slice-wise: exact patch by patch or slice by slice instead.
                return plain, record | {"engine": partial["engine"], "fallback": str(exc)}
            log.info("%s: the plain engine is used: %s", method, exc)
            return plain, record | {"engine": "plain", "fallback": str(exc)}
        else:
            return scorer, record | {"engine": "incremental"}
    return PlainWindows(ctx, fill), record | {"engine": "plain"}


def boxes_of(
    shape: tuple[int, int, int], window: tuple[int, int, int], stride: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every window's box ``[lo, hi)`` (N, 3), C order of the starts, clipped at the border."""
    import itertools

    import torch

    starts = list(
        itertools.product(
            *(window_starts(n, w, s) for n, w, s in zip(shape, window, stride, strict=True))
        )
    )
    lo = torch.tensor(starts, dtype=torch.long).reshape(-1, 3)
    hi = torch.minimum(lo + torch.tensor(window), torch.tensor(shape))
    return lo, hi


def refine_drops(
    engine: WindowScores,
    shape: tuple[int, int, int],
    lo: torch.Tensor,
    hi: torch.Tensor,
    refine: Refine,
    *,
    label: str,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Score drops of the windows ``[lo, hi)``: computed for the ``top_fraction`` where coarse
    windows say the map is strong, estimated from the coarse map for the others.

    The coarse windows tile the volume; each spreads its drop evenly over its voxels (a drop
    density), and a fine window not computed gets the density summed over its box, which is
    what a model additive over voxels would give. Fine windows are ranked by the absolute
    density summed over their box.
    """
    import torch

    if refine.window is None:
        fine = (hi - lo).max(dim=0).values.tolist()
        coarse = tuple(min(2 * f, n) for f, n in zip(fine, shape, strict=True))
    else:
        coarse = per_axis(refine.window, "approximate.refine.window")
        coarse = tuple(min(c, n) for c, n in zip(coarse, shape, strict=True))
    c_lo, c_hi = boxes_of(shape, coarse, coarse)  # type: ignore[arg-type]
    # The coarse windows are few and everything else is estimated from them: no threshold.
    coarse_scores = engine.scores(c_lo, c_hi, label=f"{label} (coarse)", exact=True)
    c_drops = engine.reference - coarse_scores
    density = torch.zeros(shape, dtype=torch.float64)
    for drop, a, b in zip(c_drops.double().cpu(), c_lo.tolist(), c_hi.tolist(), strict=True):
        volume = math.prod(e - s for s, e in zip(a, b, strict=True))
        density[a[0] : b[0], a[1] : b[1], a[2] : b[2]] = drop / volume
    estimate = _box_sums(density, lo, hi)
    strength = _box_sums(density.abs(), lo, hi)
    keep = max(1, math.ceil(refine.top_fraction * len(lo)))
    chosen = torch.argsort(strength, descending=True, stable=True)[:keep]
    drops = estimate.clone()
    if len(chosen):
        fine = engine.reference - engine.scores(lo[chosen], hi[chosen], label=label)
        drops[chosen] = fine.double().cpu()
    details = {
        "coarse_window": list(coarse),
        "coarse_windows": len(c_lo),
        "fine_windows_computed": len(chosen),
        "fine_windows_estimated": len(lo) - len(chosen),
    }
    return drops, details


def _box_sums(volume: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Sum of ``volume`` over each box [lo, hi) (N, 3), from a summed-area table."""
    import torch

    table = torch.nn.functional.pad(volume.cumsum(0).cumsum(1).cumsum(2), (1, 0, 1, 0, 1, 0))
    total = torch.zeros(len(lo), dtype=volume.dtype)
    for corner in range(8):
        pick = [(corner >> a) & 1 for a in range(3)]
        sign = (-1) ** (3 - sum(pick))
        idx = [hi[:, a] if pick[a] else lo[:, a] for a in range(3)]
        total += sign * table[idx[0], idx[1], idx[2]]
    return total
