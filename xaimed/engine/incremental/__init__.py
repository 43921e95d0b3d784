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
from xaimed.engine.incremental.runner import IncrementalScorer, build_scorer

if TYPE_CHECKING:
    from xaimed.methods.context import MethodContext

__all__ = ["IncrementalScorer", "NotIncremental", "build_scorer", "network_of"]


def network_of(ctx: MethodContext) -> tuple[torch.nn.Module, torch.dtype | None]:
    """The network whose output is the explained score, and the autocast dtype it runs under.

    Only the wrappers xaimed itself puts around a network are looked through: pass counting
    (its precision is kept) and a target reduction that passes class scores through. Tiling or
    a segmentation reduced over a region change what a forward pass computes, so they raise
    NotIncremental, as does a TorchScript model.
    """
    from xaimed.engine.counting import CountingModel
    from xaimed.engine.targets import TargetReduction
    from xaimed.engine.tiling import TiledInference

    model = ctx.model
    autocast: torch.dtype | None = None
    if isinstance(model, CountingModel):
        autocast, model = model.autocast_dtype, model.model
    if isinstance(model, TargetReduction):
        if model.segmentation:
            raise NotIncremental("the explained score reduces a segmentation over a region")
        model = model.model
    if isinstance(model, TiledInference):
        raise NotIncremental("tiling is configured")
    if ctx.is_script or isinstance(model, torch.jit.ScriptModule):
        raise NotIncremental("a TorchScript model has no traceable Python forward")
    if ctx.network is not None and model is not ctx.network:
        raise NotIncremental("the scored model wraps the network in an unknown way")
    return model, autocast
