"""Count the forward and backward passes a method makes, for the cost report."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch


@dataclass
class PassCount:
    """Samples sent forward and backward through the model, and forward calls (batches).

    ``forward`` counts inputs scored, however they were computed; ``full_pass_equivalent`` is
    the forward work done in units of one complete forward pass of one input: the same as
    ``forward`` for whole passes, less where an engine recomputes only what a perturbation
    changes (patches under tiling, changed boxes of feature maps).
    """

    forward: int = 0
    backward: int = 0
    forward_calls: int = 0
    full_pass_equivalent: float = 0.0

    def add(self, *, samples: int, calls: int, equivalent: float) -> None:
        """Count ``samples`` inputs scored in ``calls`` calls for ``equivalent`` full passes."""
        self.forward += samples
        self.forward_calls += calls
        self.full_pass_equivalent += equivalent

    def as_dict(self) -> dict[str, int | float]:
        """For sidecars and the manifest."""
        return {
            "forward": self.forward,
            "backward": self.backward,
            "forward_calls": self.forward_calls,
            "full_pass_equivalent": round(self.full_pass_equivalent, 3),
        }


def widen(t: torch.Tensor) -> torch.Tensor:
    """At least float32: half-precision outputs of autocast widened, float64 kept."""
    return t if t.dtype == torch.float64 else t.float()


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

    def autocast(self, x: torch.Tensor):
        """The autocast context of this model's forward on ``x``'s device (a no-op without
        ``autocast_dtype``), also for the engines that run parts of the wrapped model."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        self.count.add(samples=n, calls=1, equivalent=float(n))
        with self.autocast(x):
            out = self.model(x)
        out = widen(out)
        if out.requires_grad:

            def _on_backward(grad: torch.Tensor) -> None:
                self.count.backward += n

            out.register_hook(_on_backward)
        return out
