"""What a method runner receives."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MethodContext:
    """The model, one preprocessed input and the explained output, ready for a runner.

    ``model`` returns one score per class; ``inputs`` has shape (1, C, I, J, K) on ``device``.
    ``batch_size`` bounds how many samples a runner sends through the model at once.
    """

    model: torch.nn.Module
    inputs: torch.Tensor
    target: int
    seed: int
    batch_size: int
    device: torch.device
    is_script: bool = False
