"""Tiny fully convolutional models for tiling and segmentation-target tests (`seg_models:Name`)."""

from __future__ import annotations

import torch
from torch import nn


class TinySeg(nn.Module):
    """Conv 3^3 -> ReLU -> conv 1^3: per-voxel outputs for ``labels``, translation-equivariant."""

    def __init__(self, in_channels: int = 1, labels: int = 2, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, width, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Conv3d(width, labels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv(x)))


class Pointwise(nn.Module):
    """A 1^3 convolution: tiles cannot change its output at all."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x))


class FixedSizeSeg(nn.Module):
    """Takes only 16^3 inputs and returns softmax probabilities for 3 labels (channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 4, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Conv3d(4, 3, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != 16 or x.shape[3] != 16 or x.shape[4] != 16:
            raise ValueError("FixedSizeSeg takes 16x16x16 inputs only")
        return torch.softmax(self.head(self.relu(self.conv(x))), dim=1)
