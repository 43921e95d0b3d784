"""An ensemble as one model: the mean of its members' outputs, members run one after another.

The explained score is the ensemble's, as nnU-Net and MONAI ensemble folds: the mean of the
members' outputs (logits or probabilities, as the members return them). Every attribution method
therefore explains the ensemble exactly by running on this module. With gradients on, each
member's forward runs under activation checkpointing: only its input and output are kept, and its
activations are recomputed during the backward pass, one member at a time, so the memory of a
gradient method does not grow with the number of members.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


class EnsembleModule(torch.nn.Module):
    """Mean of the outputs of ``members`` (all must return the same shape)."""

    def __init__(self, members: list[torch.nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        recompute = torch.is_grad_enabled() and len(self.members) > 1
        for member in self.members:
            out = checkpoint(member, x, use_reentrant=False) if recompute else member(x)
            total = out if total is None else total + out
        if total is None:  # at least one member, checked in __init__
            raise RuntimeError("an ensemble without members")
        # Members may sum in float16 as nnU-Net does (NnunetWindow); the mean is float32 here.
        return (total / len(self.members)).float()


class AsFloat32(torch.nn.Module):
    """A member on its own, its output as float32 (members may return float16 sums)."""

    def __init__(self, member: torch.nn.Module) -> None:
        super().__init__()
        self.member = member

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member(x).float()
