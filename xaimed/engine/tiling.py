"""Sliding-window inference for fully convolutional models, split into sampler and aggregator.

The sampler says where the patches are (overlapping, the last one shifted back to end at the
border, never padded past it); the aggregator blends the patches' outputs into one map with a
weight per patch voxel (Gaussian, to play down patch borders, or constant) and divides by the
summed weights. Everything is plain tensor arithmetic, so gradients flow through the tiling and
gradient methods work on a tiled model as on any other.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import torch

from xaimed.errors import ModelError

# Gaussian blending: sigma as a fraction of the patch (MONAI's default), and a floor of the
# weights along each axis, so that a patch's border still counts where no other patch covers it.
SIGMA_SCALE = 0.125
MIN_WEIGHT = 1e-3


def axis_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Patch starts along one axis; a patch never extends past the border."""
    if size <= patch:
        return [0]
    step = max(1, round(patch * (1 - overlap)))
    starts = list(range(0, size - patch + 1, step))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def patches(
    shape: tuple[int, ...], patch: tuple[int, ...], overlap: float
) -> Iterator[tuple[slice, ...]]:
    """The sampler: spatial slices of every patch over ``shape``."""
    sizes = [min(p, n) for p, n in zip(patch, shape, strict=True)]
    per_axis = [axis_starts(n, p, overlap) for n, p in zip(shape, sizes, strict=True)]
    for start in itertools.product(*per_axis):
        yield tuple(slice(s, s + p) for s, p in zip(start, sizes, strict=True))


def blend_weights(size: tuple[int, ...], blend: str, device: torch.device) -> torch.Tensor:
    """Weight of each voxel of a patch of ``size``."""
    if blend == "constant":
        return torch.ones(size, device=device)
    axes = []
    for n in size:
        centre, sigma = (n - 1) / 2, max(n * SIGMA_SCALE, 1e-6)
        coords = torch.arange(n, dtype=torch.float32, device=device)
        axis = torch.exp(-((coords - centre) ** 2) / (2 * sigma**2))
        # Floor each axis, not the product: a floor on the product would give a corner voxel
        # of one patch as much weight as the well-centred voxel of its neighbour.
        axes.append((axis / axis.max()).clamp(min=MIN_WEIGHT))
    return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]


class TiledInference(torch.nn.Module):
    """Runs ``model`` patch by patch when the input is larger than ``patch_size``.

    The model must be fully convolutional: a patch's output is a map with the patch's spatial
    size. Inputs no larger than a patch go through the model whole.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        patch_size: tuple[int, int, int],
        *,
        overlap: float = 0.5,
        blend: str = "gaussian",
    ) -> None:
        super().__init__()
        self.model = model
        self.patch_size = tuple(int(p) for p in patch_size)
        self.overlap = overlap
        self.blend = blend

    def record(self) -> dict[str, object]:
        """For sidecars."""
        return {"patch_size": list(self.patch_size), "overlap": self.overlap, "blend": self.blend}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(int(n) for n in x.shape[2:])
        if all(n <= p for n, p in zip(shape, self.patch_size, strict=True)):
            return self.model(x)
        boxes = list(patches(shape, self.patch_size, self.overlap))
        patch_shape = tuple(b.stop - b.start for b in boxes[0])
        # Without gradients, several patches go through the model per call (tiny patches are
        # slow one by one), never more voxels than the whole input, which the batch size was
        # sized for. With gradients, all patches go in one call: hook-based methods (DeepLift,
        # guided backprop) need every module to run once per pass, and the batch size of those
        # methods was measured through this very forward, all patches included.
        per_call = (
            len(boxes)
            if torch.is_grad_enabled()
            else max(1, math.prod(shape) // math.prod(patch_shape))
        )
        n = x.shape[0]
        weights = blend_weights(patch_shape, self.blend, x.device)
        norm = torch.zeros(shape, device=x.device)
        total: torch.Tensor | None = None
        for first in range(0, len(boxes), per_call):
            chunk = boxes[first : first + per_call]
            out = self.model(torch.cat([x[(slice(None), slice(None), *b)] for b in chunk]))
            if out.ndim != x.ndim or tuple(out.shape[2:]) != patch_shape:
                raise ModelError(
                    f"tiling: the model maps a patch of {patch_shape} to an output of shape "
                    f"{tuple(out.shape[1:])}, not a map of the patch's size; tiling needs a fully "
                    "convolutional model, so remove the `tiling` section."
                )
            if total is None:
                total = out.new_zeros((n, out.shape[1], *shape))
            for i, box in enumerate(chunk):
                total[(slice(None), slice(None), *box)] += out[i * n : (i + 1) * n] * weights.to(
                    out.dtype
                )
                norm[box] += weights
        if total is None:  # every volume has at least one patch
            raise RuntimeError("sliding window produced no patch")
        return total / norm.to(total.dtype)
