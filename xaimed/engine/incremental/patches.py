"""A batch of windows' activations at one node: only the changed box, the rest is the cache.

``Patch`` holds, for every window of a batch, the values of one feature map inside a box of
the same size for all windows (at its own position per window); outside the box the map equals
the unoccluded forward pass, kept in the cache. ``Whole`` holds complete batched values (once a
box covers the map, or after a node without a box rule). ``Const`` marks values that do not
depend on the input at all (weights read in ``forward``, constants).

``read`` is the one gather every rule uses: the cached map (padded as the op pads) over a
region per window, with the patch's values where the region meets the patch's box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from xaimed.engine.incremental.boxes import Triple


@dataclass
class Patch:
    """Values (B, C, *size) of a spatial map inside the box at ``lo`` (B, 3), per window."""

    values: torch.Tensor
    lo: torch.Tensor

    @property
    def size(self) -> Triple:
        return tuple(int(n) for n in self.values.shape[2:])  # type: ignore[return-value]

    @property
    def hi(self) -> torch.Tensor:
        return self.lo + torch.tensor(self.size, dtype=torch.long)


@dataclass
class Whole:
    """Complete batched values of a node (a tensor, or what a shape query returns)."""

    value: Any


@dataclass
class Const:
    """A node that does not depend on the input: its cached value serves every window."""

    value: Any


@dataclass
class PaddedCache:
    """One node's cached map (1, C, *dims) padded once per padding, flattened for gathers."""

    source: torch.Tensor
    pads: dict[tuple[Triple, Triple, float], torch.Tensor] = field(default_factory=dict)

    def padded(self, lo: Triple, hi: Triple, value: float) -> torch.Tensor:
        """The cached map with ``lo``/``hi`` voxels of ``value`` before/after each axis."""
        key = (lo, hi, value)
        if key not in self.pads:
            if any(lo) or any(hi):
                pad = (lo[2], hi[2], lo[1], hi[1], lo[0], hi[0])
                self.pads[key] = torch.nn.functional.pad(self.source, pad, value=value)
            else:
                self.pads[key] = self.source
        return self.pads[key]


def _axis_index(start: torch.Tensor, extent: int) -> torch.Tensor:
    """(B, extent): the coordinates start + 0 .. extent-1 of each window along one axis."""
    return start[:, None] + torch.arange(extent, dtype=torch.long)


def _box(lo: list[int], extent: Triple) -> tuple[slice, slice, slice]:
    return tuple(slice(s, s + e) for s, e in zip(lo, extent, strict=True))  # type: ignore[return-value]


# The gathers below slice window by window: a batch holds at most a few hundred windows, and
# copying boxes by slicing costs far less than index arithmetic over every voxel of them.


def gather(volume: torch.Tensor, start: torch.Tensor, extent: Triple) -> torch.Tensor:
    """(B, C, *extent): the region at ``start`` (B, 3) of a single map ``volume`` (1, C, ...)."""
    out = volume.new_empty((len(start), volume.shape[1], *extent))
    for b, lo in enumerate(start.tolist()):
        out[b].copy_(volume[(0, slice(None), *_box(lo, extent))])
    return out


def read(
    cache: PaddedCache,
    patch: Patch | None,
    start: torch.Tensor,
    extent: Triple,
    pad_lo: Triple = (0, 0, 0),
    pad_hi: Triple = (0, 0, 0),
    pad_value: float = 0.0,
) -> torch.Tensor:
    """(B, C, *extent): the node's map as each window sees it, over the region at ``start``
    (coordinates of the map padded by ``pad_lo``), padding included."""
    base = gather(cache.padded(pad_lo, pad_hi, pad_value), start, extent)
    if patch is None:
        return base
    size = patch.size
    values = patch.values.to(base.dtype)
    for b, (first, own) in enumerate(zip(start.tolist(), patch.lo.tolist(), strict=True)):
        # The patch's box in the region's coordinates, where the two meet.
        rel = [o + p - f for o, p, f in zip(own, pad_lo, first, strict=True)]
        lo = [max(0, r) for r in rel]
        hi = [min(e, r + n) for e, r, n in zip(extent, rel, size, strict=True)]
        if any(h <= low for low, h in zip(lo, hi, strict=True)):
            continue
        into = tuple(slice(low, h) for low, h in zip(lo, hi, strict=True))
        src = tuple(slice(low - r, h - r) for low, h, r in zip(lo, hi, rel, strict=True))
        base[(b, slice(None), *into)] = values[(b, slice(None), *src)]
    return base


def whole(cache: torch.Tensor, patch: Patch) -> torch.Tensor:
    """(B, C, *dims): complete maps, the cached map with each window's patch pasted in."""
    batch = len(patch.lo)
    out = cache.expand(batch, *cache.shape[1:]).clone()
    size = patch.size
    values = patch.values.to(out.dtype)
    for b, (i, j, k) in enumerate(patch.lo.tolist()):
        out[b, :, i : i + size[0], j : j + size[1], k : k + size[2]] = values[b]
    return out


def crop(values: torch.Tensor, offset: torch.Tensor, extent: Triple) -> torch.Tensor:
    """(B, C, *extent): from each window's map in ``values`` (B, C, ...), the box at its own
    ``offset`` (B, 3)."""
    out = values.new_empty((len(offset), values.shape[1], *extent))
    for b, lo in enumerate(offset.tolist()):
        out[b].copy_(values[(b, slice(None), *_box(lo, extent))])
    return out


def box_mask(start: torch.Tensor, extent: Triple, lo: torch.Tensor, hi: torch.Tensor):
    """(B, 1, *extent) bool: which voxels of the region at ``start`` lie in the box [lo, hi)."""
    masks = []
    for a in range(3):
        coord = _axis_index(start[:, a], extent[a])
        ok = (coord >= lo[:, a, None]) & (coord < hi[:, a, None])
        masks.append(_along(a, ok, len(start), extent))
    return (masks[0] & masks[1] & masks[2])[:, None]


def _along(axis: int, ok: torch.Tensor, batch: int, extent: Triple) -> torch.Tensor:
    """(B, R) per-axis flags -> (B, 1, 1, 1) shaped to broadcast along ``axis``."""
    shape = [batch, 1, 1, 1]
    shape[axis + 1] = extent[axis]
    return ok.reshape(shape)
