"""The model as every method sees it: one score per output, passes counted.

``CountingModel(TargetReduction(TiledInference(PlaneModel(network))))``: the plane adapter (2D
models only, :mod:`xaimed.engine.planar`) gives a 2D network xaimed's planes of depth 1, tiling
(when configured) lets a fully convolutional model run on volumes larger than its patch, the
target reduction turns a segmentation output into one score per label, and the counter records
the cost. Built in one place so that ``xaimed explain`` and ``xaimed evaluate`` score a model
identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xaimed.config import Config
from xaimed.engine.counting import CountingModel
from xaimed.engine.planar import PlaneModel
from xaimed.engine.targets import TargetReduction
from xaimed.engine.tiling import TiledInference

# The autocast dtype of each runtime.precision (None: plain fp32).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Scorer:
    """A network wrapped for the methods, with the pieces callers need to reach."""

    network: torch.nn.Module
    counting: CountingModel
    reduction: TargetReduction
    is_script: bool
    output: str
    # 2 for a 2D network (``model.spatial_dims``): methods hooking its layers see 4D features.
    spatial_dims: int = 3


def build_scorer(network: torch.nn.Module, config: Config, *, is_script: bool) -> Scorer:
    """Wrap ``network`` as the config says (tiling, target reduction, precision)."""
    inner: torch.nn.Module = network
    if config.model.spatial_dims == 2:
        inner = PlaneModel(network)
    if config.tiling is not None:
        inner = TiledInference(
            inner,
            config.tiling.patch_size,
            overlap=config.tiling.overlap,
            blend=config.tiling.blend,
        )
    reduction = TargetReduction(inner, config.target, output=config.model.output)
    counting = CountingModel(reduction, autocast_dtype=PRECISIONS[config.runtime.precision])
    return Scorer(
        network, counting, reduction, is_script, config.model.output, config.model.spatial_dims
    )


def scored_parts(model: torch.nn.Module) -> tuple[CountingModel, TargetReduction]:
    """The counting wrapper and the target reduction of a model that :func:`build_scorer`
    wrapped, or ValueError saying why ``model`` is not one (the engines that recompute only
    what a perturbation changes reach the pieces inside this way)."""
    if not isinstance(model, CountingModel):
        raise ValueError("the scored model is not xaimed's counting wrapper")
    if not isinstance(model.model, TargetReduction):
        raise ValueError("the scored model has no target reduction")
    return model, model.model
