"""Sliding-window inference for fully convolutional models, split into sampler and aggregator.

The sampler says where the patches are (overlapping, the last one shifted back to end at the
border, never padded past it); the aggregator blends the patches' outputs into one map with a
weight per patch voxel (Gaussian, to play down patch borders, or constant) and divides by the
summed weights. Everything is plain tensor arithmetic, so gradients flow through the tiling
and gradient methods work on a tiled model as on any other.

Patch starts are MONAI's ``sliding_window_inference``'s (scan interval and last-patch
placement), and constant blending gives MONAI's map (tested to 1e-5). Two deliberate
differences: the Gaussian weights' floor is per axis, not on their product (see
:func:`blend_weights`), and an axis shorter than the patch is not padded to it (MONAI pads
with zeros): the patch shrinks to the axis, and a volume no larger than a patch goes through
the model whole, so the model never sees padding that is not in the image.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from xaimed.errors import ModelError

# Gaussian blending: sigma as a fraction of the patch (MONAI's default), and a floor of the
# weights along each axis, so that a patch's border still counts where no other patch covers it.
SIGMA_SCALE = 0.125
MIN_WEIGHT = 1e-3


def axis_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Patch starts along one axis; a patch never extends past the border.

    The step is ``int(patch * (1 - overlap))``, truncated and at least 1, as MONAI's scan
    interval, so that both place the same patches.
    """
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1 - overlap)))
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
    """Weight of each voxel of a patch of ``size``.

    Gaussian: sigma = patch x 0.125 along each axis, as MONAI's importance map, but floored per
    axis at ``MIN_WEIGHT`` of the axis' peak. MONAI floors the product at 1e-3 instead, which
    lifts every voxel off the patch's centre lines to 1e-3 and lets patch borders (zero-padded
    convolutions) into the blend: on a tiny UNet, 40x36x28 volume, 16^3 patches, MONAI's map
    differs from the untiled one by 35 % (overlap 0.25) and 27 % (0.5) of its largest value,
    this one by 0.9 % and 0.2 %.
    """
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


@dataclass(frozen=True)
class TilePlan:
    """Where the patches of one volume are and how their outputs are blended.

    A voxel's blended output is ``sum_p weights_p * out_p / norm`` over the patches ``p`` that
    hold it; ``weights`` and ``norm`` depend only on the layout, never on the input, which is
    what lets perturbation engines update a score patch by patch and gradients be summed over
    patch batches.
    """

    boxes: list[tuple[slice, ...]]
    patch_shape: tuple[int, ...]
    weights: torch.Tensor  # (*patch_shape)
    norm: torch.Tensor  # (*volume shape): summed weights


class _Recomputed(torch.autograd.Function):
    """One batch of patches whose activations are not kept for the backward pass.

    The forward keeps no activations; the backward runs the batch again with gradients and
    returns the input's gradient. Module hooks (DeepLift, guided backprop, LRP) fire on that
    second run exactly as on an ordinary forward and backward of the batch, so hook-based
    methods see one consistent pass per batch. Written here because torch.utils.checkpoint
    either refuses ``torch.autograd.grad`` (reentrant) or does not backpropagate through the
    recomputed graph (non-reentrant), where those hooks live.
    """

    @staticmethod
    def forward(ctx, run, x):  # type: ignore[override]
        ctx.run = run
        device = x.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.save_for_backward(x)
        # With gradients on a detached copy, so that hook-based methods can set their tensor
        # hooks; the graph is dropped with the detached result, keeping nothing for backward.
        with torch.enable_grad():
            return run(x.detach().requires_grad_(True)).detach()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        device, enabled, dtype = ctx.autocast
        with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
            xd = x.detach().requires_grad_(True)
            out = ctx.run(xd)
            (gx,) = torch.autograd.grad(out, xd, grad.to(out.dtype))
        return None, gx


class TiledInference(torch.nn.Module):
    """Runs ``model`` patch by patch when the input is larger than ``patch_size``.

    The model must be fully convolutional: a patch's output is a map with the patch's spatial
    size. Inputs no larger than a patch go through the model whole.

    With gradients, ``patches_per_call`` (set from the memory budget by
    :func:`xaimed.engine.batching.choose_batch_size`) bounds how many patch samples keep their
    activations at once: the patches go through the model in batches that are run again in the
    backward pass, so peak memory follows the patch batch, not the volume. None sends every
    patch in one call.
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
        self.patches_per_call: int | None = None

    def sidecar_fields(self) -> dict[str, object]:
        """For sidecars."""
        return {"patch_size": list(self.patch_size), "overlap": self.overlap, "blend": self.blend}

    def plan(self, shape: tuple[int, ...], device: torch.device) -> TilePlan | None:
        """The patch layout over a volume of ``shape``; None when it fits in one patch."""
        if all(n <= p for n, p in zip(shape, self.patch_size, strict=True)):
            return None
        boxes = list(patches(shape, self.patch_size, self.overlap))
        patch_shape = tuple(b.stop - b.start for b in boxes[0])
        weights = blend_weights(patch_shape, self.blend, device)
        norm = torch.zeros(shape, device=device)
        for box in boxes:
            norm[box] += weights
        return TilePlan(boxes, patch_shape, weights, norm)

    def run_patches(self, x: torch.Tensor, boxes: list[tuple[slice, ...]]) -> torch.Tensor:
        """(N, P, L, *patch): the model's output on each of ``boxes`` of each sample of ``x``.

        Sample-major, so that a method that splits the batch into halves (DeepLift's inputs
        and baselines) finds every patch of a sample in its own half.
        """
        n = x.shape[0]
        stacked = torch.stack([x[(slice(None), slice(None), *b)] for b in boxes], dim=1)
        out = self.run_model(stacked.reshape(n * len(boxes), *stacked.shape[2:]))
        return out.reshape(n, len(boxes), *out.shape[1:])

    def run_model(self, stack: torch.Tensor) -> torch.Tensor:
        """The model on a stack of patches (P, C, *patch), checked to return maps of them."""
        patch_shape = tuple(int(s) for s in stack.shape[2:])
        out = self.model(stack)
        if out.ndim != stack.ndim or tuple(out.shape[2:]) != patch_shape:
            raise ModelError(
                f"tiling: the model maps a patch of {patch_shape} to an output of shape "
                f"{tuple(out.shape[1:])}, not a map of the patch's size; tiling needs a fully "
                "convolutional model, so remove the `tiling` section."
            )
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(int(n) for n in x.shape[2:])
        plan = self.plan(shape, x.device)
        if plan is None:
            return self.model(x)
        boxes = plan.boxes
        n = x.shape[0]
        recompute = False
        if torch.is_grad_enabled():
            # Without a budget, all patches go in one call: hook-based methods then see one
            # pass. With one, batches of patches are recomputed in the backward pass.
            per_call = len(boxes)
            if self.patches_per_call is not None:
                per_call = max(1, self.patches_per_call // max(1, n))
                recompute = per_call < len(boxes) and x.requires_grad
                per_call = per_call if recompute else len(boxes)
        else:
            # Several patches per call (tiny patches are slow one by one), never more voxels
            # than the whole input, which the batch size was sized for.
            per_call = max(1, math.prod(shape) // math.prod(plan.patch_shape))
        total: torch.Tensor | None = None
        for first in range(0, len(boxes), per_call):
            chunk = boxes[first : first + per_call]
            if recompute:
                out = _Recomputed.apply(lambda t, c=chunk: self.run_patches(t, c), x)
            else:
                out = self.run_patches(x, chunk)
            if total is None:
                total = out.new_zeros((n, out.shape[2], *shape))
            weights = plan.weights.to(out.dtype)
            for i, box in enumerate(chunk):
                total[(slice(None), slice(None), *box)] += out[:, i] * weights
        if total is None:  # a plan always has at least one patch
            raise ModelError("tiling: no patch covers the input.")
        return total / plan.norm.to(total.dtype)
