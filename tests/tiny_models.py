"""Tiny models for tests, importable as `tiny_models:Name` through model.python_path."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv -> ReLU -> global average pool -> linear: small enough to reason about."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, width, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm3d(width)
        self.relu = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gap(self.relu(self.bn(self.conv(x)))).flatten(1))


class LinearModel(nn.Module):
    """logit_c = sum(w_c * x): gradients and integrated gradients are known in closed form."""

    def __init__(self, shape: tuple[int, int, int] = (8, 8, 8), num_classes: int = 2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_classes, *shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0, None] * self.weight[None]).flatten(2).sum(-1)


class FunctionalReLU(nn.Module):
    """Uses torch.relu, not an nn.ReLU module: guided backprop cannot hook it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))


class MemoryBound(TinyCNN):
    """TinyCNN that raises CUDA's out-of-memory error when a forward holds too many voxels.

    Stands in for a device that is too small: batches above the bound must be split, and an
    input above it on its own cannot run at all.
    """

    def __init__(self, bound: int = 5500, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bound = bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() > self.bound:
            raise torch.OutOfMemoryError(f"CUDA out of memory: tried to hold {x.numel()} voxels")
        return super().forward(x)


class TinyCNN2D(nn.Module):
    """A 2D classifier: conv, batch norm, ReLU, max pool, conv, ReLU, global average pool, linear.

    Every layer family the 2D paths must handle (Conv2d, BatchNorm2d, MaxPool2d,
    AdaptiveAvgPool2d) in a network small enough for exact comparisons.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu1(self.bn(self.conv1(x))))
        return self.fc(self.gap(self.relu2(self.conv2(x))).flatten(1))
