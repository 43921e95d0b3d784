"""Incremental occlusion: exact occlusion scores at a fraction of the work.

An occlusion window changes only the part of each early feature map that its receptive field
reaches; everything else equals the unoccluded forward pass. This package records that pass
once and then, per batch of windows, recomputes only the changed box of every layer
(``boxes`` does the arithmetic, ``graph`` traces the network and gives each op its rule,
``patches`` holds the per-window boxes, ``runner`` runs them). See ``network_of`` for which
scored models qualify.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from xaimed.engine.incremental.graph import NotIncremental
from xaimed.engine.incremental.runner import IncrementalScorer, build_incremental_scorer

if TYPE_CHECKING:
    from xaimed.engine.targets import TargetReduction
    from xaimed.methods.context import MethodContext

__all__ = ["IncrementalScorer", "NotIncremental", "build_incremental_scorer", "network_of"]


def network_of(
    ctx: MethodContext,
) -> tuple[torch.nn.Module, torch.dtype | None, TargetReduction | None]:
    """The network whose output is the explained score, the autocast dtype it runs under, and
    the target reduction that turns its maps into scores (None for class scores).

    Only the wrappers xaimed itself puts around a network are looked through: pass counting
    (its precision is kept), a target reduction (class scores pass through; segmentation
    maps are reduced over their regions from the changed box) and the plane adapter of 2D
    models (the network is lifted to its 3D equal of depth 1, :mod:`.lift`). Tiling raises
    NotIncremental (the patch-incremental engine handles it), as does a TorchScript model.
    """
    from xaimed.engine.counting import CountingModel
    from xaimed.engine.incremental.lift import lift_to_3d
    from xaimed.engine.planar import PlaneModel
    from xaimed.engine.targets import TargetReduction
    from xaimed.engine.tiling import TiledInference
    from xaimed.models.slicewise import SliceWise

    model = ctx.model
    autocast: torch.dtype | None = None
    reducer: TargetReduction | None = None
    if isinstance(model, CountingModel):
        autocast, model = model.autocast_dtype, model.model
    if isinstance(model, TargetReduction):
        reducer = model if model.segmentation else None
        model = model.model
    if isinstance(model, TiledInference):
        raise NotIncremental("tiling is configured")
    if isinstance(model, SliceWise):
        raise NotIncremental("the model is slice-wise (the slice-incremental engine handles it)")
    if ctx.is_script or isinstance(model, torch.jit.ScriptModule):
        raise NotIncremental("a TorchScript model has no traceable Python forward")
    if isinstance(model, PlaneModel):
        if isinstance(model.network, torch.jit.ScriptModule):
            raise NotIncremental("a TorchScript model has no traceable Python forward")
        if ctx.network is not None and model.network is not ctx.network:
            raise NotIncremental("the scored model wraps the network in an unknown way")
        return lift_to_3d(model.network, ctx.inputs.detach()), autocast, reducer
    if ctx.network is not None and model is not ctx.network:
        raise NotIncremental("the scored model wraps the network in an unknown way")
    return model, autocast, reducer
