"""Slice-wise (2.5D) models: a 2D network run on every slice of a volume, as one 3D model.

The wrapped network takes (n, C * (2K + 1), P, Q): one slice of the volume with its K
neighbouring slices on each side stacked as channels, nearest slice first along the array axis
(channel ``j * C + c`` is volume channel ``c`` of slice ``s - K + j``). At the volume's edges the
missing neighbours are the edge slice repeated (replicate padding, as the slice index is clamped).
The slices of a batch of volumes go through the network in calls of at most ``slices_per_call``
slices (sized from the memory budget by :func:`xaimed.engine.batching.choose_batch_size`).

The outputs become one 3D model's output: a network that returns a map per slice
(n, L, P, Q) gives per-slice logits stacked back along the slice axis, (N, L, I, J, K), so
segmentation targets work unchanged; a network that returns scores (n, L) gives one score per
label for the volume, the mean or the maximum over slices (``reduce``). Everything is plain tensor
arithmetic, so gradients flow to every slice and its neighbours.

The slice axis is a world axis in the config (axial, coronal, sagittal) and an array axis here:
:meth:`SliceWise.use_grid` resolves it per case from the model grid's orientation code.
"""

from __future__ import annotations

from typing import Any

import torch

from xaimed.errors import InputError

# Orientation-code letters of each world axis (nibabel's axcodes: where an array axis points).
AXIS_LETTERS = {"axial": "SI", "coronal": "AP", "sagittal": "LR"}


def array_axis(name: str, axcodes: str) -> int:
    """The array axis (0, 1 or 2) of the world axis ``name`` on a grid oriented ``axcodes``."""
    letters = AXIS_LETTERS[name]
    for axis, code in enumerate(axcodes):
        if code in letters:
            return axis
    # aff2axcodes names every world axis once for any invertible affine.
    raise ValueError(f"orientation {axcodes!r} has no {name} axis")


class SliceWise(torch.nn.Module):
    """A 2D ``network`` run slice by slice along one array axis of (N, C, I, J, K) inputs."""

    def __init__(
        self, network: torch.nn.Module, *, world_axis: str, context: int, reduce: str
    ) -> None:
        super().__init__()
        self.network = network
        self.world_axis = world_axis
        self.context = context
        self.reduce = reduce
        self.axis: int | None = None  # array axis of the current case (use_grid)
        self.axcodes: str | None = None
        self.case_id = ""
        # Slices per network call; sized from the memory budget for each input shape.
        self.slices_per_call = 64

    def use_grid(self, axcodes: str, case_id: str) -> None:
        """Slice the current case's model grid (orientation ``axcodes``) along the configured
        world axis."""
        self.axis = array_axis(self.world_axis, axcodes)
        self.axcodes = axcodes
        self.case_id = case_id

    def sidecar_fields(self) -> dict[str, Any]:
        """For the sidecar: the configured slicing and the current case's array axis."""
        return {
            "axis": self.world_axis,
            "array_axis": self.axis,
            "orientation": self.axcodes,
            "context": self.context,
            "edges": "replicate",
            "reduce": self.reduce,
            "slices_per_call": self.slices_per_call,
        }

    def moved(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, I, J, K) -> (N, C, S, P, Q) with the slice axis third."""
        if self.axis is None:
            raise RuntimeError("SliceWise used before use_grid() set the case's slice axis")
        return x.movedim(2 + self.axis, 2)

    def stacks(self, xs: torch.Tensor, volumes: torch.Tensor, slices: torch.Tensor) -> torch.Tensor:
        """The network's inputs for slice ``slices[i]`` of volume ``volumes[i]`` of ``xs``
        (N, C, S, P, Q): (n, C * (2K + 1), P, Q), edges replicated."""
        offsets = torch.arange(-self.context, self.context + 1, device=xs.device)
        index = (slices.to(xs.device)[:, None] + offsets).clamp(0, xs.shape[2] - 1)
        # Advanced indices apart from each other put their dimensions first: (n, 2K+1, C, P, Q).
        picked = xs[volumes.to(xs.device)[:, None], :, index]
        return picked.reshape(picked.shape[0], -1, *picked.shape[3:])

    def per_slice(self, x: torch.Tensor) -> torch.Tensor:
        """Every slice's network output: (N, S, L) scores or (N, S, L, P, Q) maps."""
        xs = self.moved(x)
        n, s = xs.shape[0], xs.shape[2]
        volumes = torch.arange(n).repeat_interleave(s)
        slices = torch.arange(s).repeat(n)
        parts = []
        for first in range(0, n * s, self.slices_per_call):
            chunk = slice(first, first + self.slices_per_call)
            parts.append(self.network(self.stacks(xs, volumes[chunk], slices[chunk])))
        out = torch.cat(parts)
        return out.reshape(n, s, *out.shape[1:])

    def assemble(self, per_slice: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-slice outputs (N, S, L[, P, Q]) -> the volume's output: scores reduced over
        slices (N, L), or maps stacked on the input's grid (N, L, I, J, K)."""
        if per_slice.ndim == 3:
            if self.reduce == "max":
                return per_slice.max(dim=1).values
            return per_slice.mean(dim=1)
        plane = tuple(int(n) for n in self.moved(x).shape[3:])
        if per_slice.ndim != 5 or tuple(per_slice.shape[3:]) != plane:
            raise InputError(
                f"case {self.case_id}: the 2D network of model.slicewise returned "
                f"{tuple(per_slice.shape[2:])} per slice of size {plane}; it must return one "
                "score per class (L,) or a map of the slice's size (L, P, Q)."
            )
        if self.axis is None:
            raise RuntimeError("SliceWise used before use_grid()")
        return per_slice.movedim(1, 2).movedim(2, 2 + self.axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.assemble(self.per_slice(x), x)


def slice_case(model: torch.nn.Module, axcodes: str, case_id: str) -> None:
    """Point every slice-wise model inside ``model`` at the current case's model grid."""
    for module in model.modules():
        if isinstance(module, SliceWise):
            module.use_grid(axcodes, case_id)


def same_slicing(source: torch.nn.Module, model: torch.nn.Module) -> None:
    """Slice ``model`` (a copy or another checkpoint) as ``source`` slices the current case."""
    for module in source.modules():
        if isinstance(module, SliceWise) and module.axcodes is not None:
            slice_case(model, module.axcodes, module.case_id)
            return
