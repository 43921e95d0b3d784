"""Count the forward and backward passes a method makes, for the cost report."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch


@dataclass
class PassCount:
    """Samples sent forward and backward through the model, and forward calls (batches)."""

    forward: int = 0
    backward: int = 0
    forward_calls: int = 0

    def as_dict(self) -> dict[str, int]:
        """For sidecars and the manifest."""
        return {
            "forward": self.forward,
            "backward": self.backward,
            "forward_calls": self.forward_calls,
        }


class CountingModel(torch.nn.Module):
    """Wraps a model; counts every sample that goes forward and every one that goes backward.

    The wrapped model stays a submodule, so methods that hook its layers (guided backprop,
    DeepLift) still find them. ``autocast_dtype`` runs the forward under autocast.
    """

    def __init__(
        self, model: torch.nn.Module, *, autocast_dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.count = PassCount()
        self.autocast_dtype = autocast_dtype

    def reset(self) -> PassCount:
        """Start a new count; returns the old one."""
        old, self.count = self.count, PassCount()
        return old

    def _autocast(self, x: torch.Tensor):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        self.count.forward += n
        self.count.forward_calls += 1
        with self._autocast(x):
            out = self.model(x)
        out = out.float()
        if out.requires_grad:

            def _on_backward(grad: torch.Tensor) -> None:
                self.count.backward += n

            out.register_hook(_on_backward)
        return out
