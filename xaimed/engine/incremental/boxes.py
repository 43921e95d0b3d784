"""Changed-box arithmetic: which part of a feature map a perturbation can change.

A box is held per window as ``lo`` and ``hi`` (exclusive), LongTensors of shape (B, 3), in the
voxel coordinates of one feature map. A sliding op (convolution, pooling) with kernel ``k``,
stride ``s``, dilation ``d`` and left padding ``p`` computes output voxel ``o`` from the input
voxels ``o*s - p .. o*s - p + d*(k-1)``; the functions below turn that into the output box a
changed input box can reach (``reach``) and the input region an output box reads (``region``).
Boxes are always supersets of what really changes: computing a few unchanged voxels again is
exact, missing a changed one is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class Sliding:
    """Geometry of a sliding op along the three spatial axes."""

    kernel: Triple
    stride: Triple
    dilation: Triple
    pad: Triple  # zeros (or -inf) added before the first voxel of each axis

    @property
    def span(self) -> Triple:
        """Input voxels one output voxel reads along each axis, d*(k-1) + 1."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation, strict=True))  # type: ignore[return-value]


def _vec(values: Triple) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def reach(lo: torch.Tensor, hi: torch.Tensor, op: Sliding, out_size: Triple):
    """Output box of ``op`` whose voxels read any of the input box ``[lo, hi)``, clipped."""
    k = _vec(op.span) - 1
    s, p = _vec(op.stride), _vec(op.pad)
    # o*s - p + span - 1 >= lo  and  o*s - p <= hi - 1
    out_lo = torch.div(lo + p - k + s - 1, s, rounding_mode="floor")
    out_hi = torch.div(hi - 1 + p, s, rounding_mode="floor") + 1
    return clip(out_lo, out_hi, out_size)


def region(lo: torch.Tensor, size: Triple, op: Sliding) -> tuple[torch.Tensor, Triple]:
    """Start (in the coordinates of the input padded by ``op.pad``) and size of the input
    region that the output box ``[lo, lo + size)`` reads."""
    start = lo * _vec(op.stride)
    extent = tuple((n - 1) * s + span for n, s, span in zip(size, op.stride, op.span, strict=True))
    return start, extent  # type: ignore[return-value]


def clip(lo: torch.Tensor, hi: torch.Tensor, size: Triple) -> tuple[torch.Tensor, torch.Tensor]:
    """The box limited to ``[0, size)`` on each axis."""
    n = _vec(size)
    lo = torch.minimum(torch.maximum(lo, torch.zeros_like(lo)), n)
    hi = torch.maximum(torch.minimum(hi, n.expand_as(hi)), lo)
    return lo, hi


def union(boxes: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest box holding every box of the list, per window."""
    lo = torch.stack([b[0] for b in boxes]).amin(dim=0)
    hi = torch.stack([b[1] for b in boxes]).amax(dim=0)
    return lo, hi


def uniform(lo: torch.Tensor, hi: torch.Tensor, size: Triple) -> tuple[torch.Tensor, Triple]:
    """One box size for the whole batch: the largest box, each window's box grown to it and
    shifted back inside the map where it would cross the far border.

    Equal sizes let the windows of a batch stack into one tensor per layer; a grown box is
    still a superset of what changed, so the result stays exact.
    """
    n = _vec(size)
    extent = (hi - lo).amax(dim=0).clamp(min=1)
    extent = torch.minimum(extent, n)
    start = torch.minimum(lo, n - extent).clamp(min=0)
    return start, tuple(int(e) for e in extent)  # type: ignore[return-value]


def cap(lo: torch.Tensor, hi: torch.Tensor, size: Triple, fraction: float):
    """Approximate mode: limit the box to ``fraction`` of the map along each axis, around its
    centre (the projective-field threshold of Nakandala et al.); 1 leaves boxes alone."""
    if fraction >= 1.0:
        return lo, hi
    limit = _vec(tuple(max(1, math.ceil(fraction * n)) for n in size))
    extent = hi - lo
    over = extent > limit
    centre2 = lo + hi  # twice the centre, kept integral
    new_lo = torch.div(centre2 - limit, 2, rounding_mode="floor")
    lo2 = torch.where(over, new_lo, lo)
    hi2 = torch.where(over, new_lo + limit, hi)
    return clip(lo2, hi2, size)
