"""The same method run on each member of an ensemble alone, one member after another.

The ensemble's own map comes from running the method on the ensemble (exact for every method);
the member maps serve to show where members disagree (per-voxel standard deviation, Spearman and
top-k overlap). Each member is scored exactly like the ensemble: same target, same segmentation
region (the ensemble's), same seed, so the maps differ only by the member.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from xaimed.config import Config
from xaimed.engine.scoring import build_scorer
from xaimed.engine.seeding import seed_everything
from xaimed.engine.targets import TargetReduction
from xaimed.methods.context import MethodContext, MethodOutput
from xaimed.methods.registry import MethodInfo
from xaimed.models.ensemble import AsFloat32


def member_maps(
    members: tuple[torch.nn.Module, ...],
    context: MethodContext,
    info: MethodInfo,
    params: Any,
    config: Config,
    reduction: TargetReduction,
) -> list[np.ndarray]:
    """Each member's attribution on the model's input grid, (C, I, J, K), in member order."""
    maps = []
    for member in members:
        scorer = build_scorer(AsFloat32(member), config, is_script=context.is_script)
        # The member explains the ensemble's target over the ensemble's region.
        scorer.reduction.segmentation = reduction.segmentation
        scorer.reduction.regions = reduction.regions
        scorer.reduction.voxels = list(reduction.voxels)
        seed_everything(config.runtime.seed)
        output = info.run(replace(context, model=scorer.counting, network=member), params)
        if isinstance(output, MethodOutput):
            output = output.attribution
        maps.append(output.detach().float().cpu().numpy()[0])
    return maps
