"""Scorers of the members of an ensemble alone, to run the same method on each, one after another.

The ensemble's own map comes from running the method on the ensemble (exact for every method);
the member maps serve to show where members disagree (per-voxel standard deviation, Spearman and
top-k overlap). Each member is scored exactly like the ensemble: same target, same segmentation
region (the ensemble's), same seed, so the maps differ only by the member.
"""

from __future__ import annotations

import torch

from xaimed.config import Config
from xaimed.engine.scoring import Scorer, build_scorer
from xaimed.engine.targets import TargetReduction
from xaimed.models.ensemble import AsFloat32


def member_scorer(
    member: torch.nn.Module, config: Config, reduction: TargetReduction, *, is_script: bool
) -> Scorer:
    """A scorer of one member alone that explains the ensemble's target over the ensemble's
    segmentation region (fixed on the ensemble's prediction)."""
    scorer = build_scorer(AsFloat32(member), config, is_script=is_script)
    scorer.reduction.use(reduction.case_regions)
    return scorer
