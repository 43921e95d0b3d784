"""Tiny 2D networks for slice-wise (2.5D) tests, importable as `slice_models:Name`."""

from __future__ import annotations

import torch
from torch import nn


class Slice2DClassifier(nn.Module):
    """Conv2d -> ReLU -> global average pool -> linear: one score per class per slice."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


class Slice2DSegmenter(nn.Module):
    """Conv2d -> ReLU -> 1x1 conv: a logit map per class per slice."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Conv2d(4, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv(x)))
