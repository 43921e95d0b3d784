"""Baselines for path and reference methods (integrated gradients, DeepLift, GradientShap).

Baselines live in the model's input space (after intensity normalisation): ``zero`` there is
the normalised value 0, which after z-scoring is the image mean, not air. ``min`` is the input's
minimum (usually background), ``mean`` its mean, a number is that constant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

BaselineSpec = Literal["zero", "min", "mean"] | float


def make_baseline(spec: BaselineSpec, inputs: torch.Tensor) -> torch.Tensor:
    """A baseline tensor shaped like ``inputs``; statistics are taken per channel."""
    import torch

    if isinstance(spec, int | float):
        return torch.full_like(inputs, float(spec))
    if spec == "zero":
        return torch.zeros_like(inputs)
    dims = tuple(range(2, inputs.ndim))
    if spec == "min":
        return inputs.amin(dim=dims, keepdim=True).expand_as(inputs).clone()
    if spec == "mean":
        return inputs.mean(dim=dims, keepdim=True).expand_as(inputs).clone()
    raise ValueError(f"unknown baseline {spec!r}")
