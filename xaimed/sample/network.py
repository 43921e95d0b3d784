"""The tiny CNNs the sample checkpoints were trained with: 3D (head phantoms), 2D (radiographs)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MultiSequenceCNN", "SampleCNN", "SampleCNN2D"]


def _conv_block(in_channels: int, out_channels: int, dims: int = 3) -> nn.Sequential:
    conv, norm = (nn.Conv3d, nn.BatchNorm3d) if dims == 3 else (nn.Conv2d, nn.BatchNorm2d)
    return nn.Sequential(
        conv(in_channels, out_channels, kernel_size=3, padding=1),
        norm(out_channels),
        nn.ReLU(),
    )


class SampleCNN(nn.Module):
    """Three conv blocks, global average pooling and a linear head: (N, C, D, H, W) -> logits.

    The layout is deliberately the one class activation mapping (CAM) assumes: the last
    convolutional block (``block3``) produces spatial feature maps, ``gap`` averages each map to
    one number and ``fc`` is a single linear layer on those averages, so the class score is a
    weighted sum of feature maps and ``fc.weight`` gives the CAM weights directly. Grad-CAM can
    hook ``block3`` as its target layer.

    Every ReLU is its own ``nn.ReLU`` module (not in-place, not ``F.relu``, never reused), so
    hook-based methods such as guided backpropagation and DeepLift can find and override each
    non-linearity exactly once.

    Args:
        in_channels: input channels (1 for a single MR contrast).
        num_classes: number of output logits.
        width: channels of ``block1``; ``block2`` and ``block3`` have twice and four times that.
    """

    dims = 3  # spatial dimensions of the layers (SampleCNN2D: 2)

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 8) -> None:
        super().__init__()
        pool, gap = (
            (nn.MaxPool3d, nn.AdaptiveAvgPool3d) if self.dims == 3
            else (nn.MaxPool2d, nn.AdaptiveAvgPool2d)
        )  # fmt: skip
        self.block1 = _conv_block(in_channels, width, self.dims)
        self.pool1 = pool(2)
        self.block2 = _conv_block(width, 2 * width, self.dims)
        self.pool2 = pool(2)
        self.block3 = _conv_block(2 * width, 4 * width, self.dims)
        self.gap = gap(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) for volumes (N, C, D, H, W) (SampleCNN2D: (N, C, X, Y))."""
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.gap(self.block3(x))
        return self.fc(torch.flatten(x, 1))


class MultiSequenceCNN(nn.Module):
    """The four-sequence sample model: a 3x3x3 and a 1x1x1 conv layer, global max pooling and a
    linear head.

    Small enough to train in seconds on a CPU (``scripts/train_multisequence_model.py``). Global
    *max* pooling suits the task, a small bright lesion somewhere in the head: the strongest
    feature response decides, wherever it is. ``conv2`` is the last convolutional layer (the
    layer Grad-CAM hooks); every ReLU is its own module, as hook-based methods need.

    Args:
        in_channels: input channels (4: T1, T1ce, T2, FLAIR).
        num_classes: number of output logits.
        width: channels of both conv layers.
    """

    def __init__(self, in_channels: int = 4, num_classes: int = 2, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, width, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv3d(width, width, kernel_size=1)
        self.relu2 = nn.ReLU()
        self.gmp = nn.AdaptiveMaxPool3d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, num_classes) for volumes of shape (N, C, D, H, W)."""
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(torch.flatten(self.gmp(x), 1))


class SampleCNN2D(SampleCNN):
    """:class:`SampleCNN`'s layout in 2D, for the sample radiographs: (N, C, X, Y) -> logits.

    Three conv blocks (Conv2d, BatchNorm2d, ReLU), max pooling after the first two, global
    average pooling and one linear head, so CAM, Grad-CAM (``block3``), LRP and the incremental
    occlusion engine all apply to it.

    Args:
        in_channels: input channels (1 for a radiograph).
        num_classes: number of output logits.
        width: channels of ``block1``; ``block2`` and ``block3`` have twice and four times that.
    """

    dims = 2
