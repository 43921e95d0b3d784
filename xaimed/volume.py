"""The Volume: a voxel array on a grid placed in patient space.

Convention, the only one used inside xaimed: ``affine`` is a 4x4 matrix that maps voxel indices
``(i, j, k, 1)`` (array axes 0, 1, 2) to world coordinates in millimetres, RAS+ (x grows towards the
patient's right, y towards anterior, z towards superior), as in nibabel and NIfTI. Readers of
other conventions (DICOM and ITK use LPS+) convert once, when they build the Volume.

A map computed for a Volume is made with :meth:`Volume.with_array`, which keeps the grid and the
source, so a map can only be written on the grid it was computed for.

A 2D image (a radiograph, a 2D NIfTI) is a Volume of spatial shape ``(X, Y, 1)`` whose affine's
third column is the unit normal of the image plane (1 mm) and whose ``meta["spatial_dims"]`` is
2; readers of 2D sources set it, and maps made with :meth:`Volume.with_array` keep it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from xaimed.geometry import Geometry


@dataclass(frozen=True)
class Source:
    """Where a Volume came from: the file, its format and the header needed to write alike."""

    path: Path
    format: str
    # The reader's native header (a nibabel header for NIfTI). Writers copy it so that a map keeps
    # every geometric field of the source, qform/sform codes included.
    header: Any = None


@dataclass(frozen=True)
class Volume:
    """A 3D voxel array (optionally with trailing channel axes) and its RAS+ affine.

    ``array`` has the three spatial axes first; a multi-channel volume keeps its channels on
    axis 3. ``affine`` follows the module convention (voxel index -> RAS+ mm).
    """

    array: np.ndarray
    affine: np.ndarray
    source: Source
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError(f"affine of {self.source.path} is singular or not finite")
        object.__setattr__(self, "affine", affine)

    @property
    def is_2d(self) -> bool:
        """Whether this is a 2D image: one plane of depth 1 read from a 2D source."""
        return self.meta.get("spatial_dims") == 2 and self.array.shape[2:3] == (1,)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """Shape of the three spatial axes."""
        return tuple(int(n) for n in self.array.shape[:3])  # type: ignore[return-value]

    @property
    def geometry(self) -> Geometry:
        """The grid of the spatial axes."""
        return Geometry.of(self.array.shape, self.affine)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (norms of the affine's columns)."""
        return self.geometry.spacing

    @property
    def axcodes(self) -> str:
        """Orientation code, e.g. ``"RAS"`` or ``"LPS"``: where each array axis points."""
        return self.geometry.axcodes

    def with_array(self, array: np.ndarray, **meta: Any) -> Volume:
        """A new Volume on the same grid and source, holding ``array``.

        ``meta`` (a 2D source's ``spatial_dims`` included) is carried over, updated with ``meta``.
        Raises ``ValueError`` when the spatial shape differs: a map on another grid must go back
        through the preprocessing inverse first.
        """
        if tuple(array.shape[:3]) != self.spatial_shape:
            raise ValueError(
                f"array of spatial shape {tuple(array.shape[:3])} does not fit the grid "
                f"{self.spatial_shape} of {self.source.path}"
            )
        return replace(self, array=array, meta={**self.meta, **meta})
