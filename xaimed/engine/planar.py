"""The adapter of 2D networks: xaimed's planes (X, Y, 1) in, the network's (X, Y) inside.

Inside xaimed a 2D image is a Volume of depth 1, so preprocessing, methods and writers work on
(N, C, X, Y, 1) tensors like on any volume. A 2D network (``model.spatial_dims: 2``) takes
(N, C, X, Y): :class:`PlaneModel` drops the depth axis before the network and puts it back on a
segmentation output, so gradients and perturbations reach the plane's pixels unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


def to_plane(x: torch.Tensor) -> torch.Tensor:
    """(N, C, X, Y, 1) -> (N, C, X, Y): the network's view of a plane."""
    if x.dim() != 5 or x.shape[-1] != 1:
        raise ValueError(f"a 2D model takes planes of depth 1, got an input of shape {x.shape}")
    return x[..., 0]


class PlaneModel(nn.Module):
    """``network`` (a 2D model) scored on planes of depth 1.

    Class scores (N, K) pass through; a 2D segmentation output (N, K, X, Y) gets its depth axis
    back, (N, K, X, Y, 1), so target reductions and maps see the plane's grid.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output for planes ``x`` of shape (N, C, X, Y, 1)."""
        out = self.network(to_plane(x))
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            return out[..., None]
        return out
