"""Geometry: a voxel grid placed in patient space, and the one RAS <-> LPS conversion.

``affine`` maps voxel indices ``(i, j, k, 1)`` to world millimetres in RAS+ (nibabel's and
NIfTI's convention, the only one used inside xaimed). DICOM and ITK use LPS+; their readers and
writers convert with :func:`lps_to_ras` / :func:`ras_to_lps`, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Flipping x and y turns RAS+ into LPS+ and back (the matrix is its own inverse).
_FLIP_XY = np.diag([-1.0, -1.0, 1.0, 1.0])

# Two grids whose affines differ by less than this (mm) are the same grid: float32 storage
# of an affine (NIfTI's sform) rounds well below it.
GRID_TOLERANCE_MM = 1e-3


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """A voxel -> LPS+ affine as xaimed's voxel -> RAS+ affine."""
    return _FLIP_XY @ np.asarray(affine_lps, dtype=np.float64)


def ras_to_lps(affine_ras: np.ndarray) -> np.ndarray:
    """A voxel -> RAS+ affine as a voxel -> LPS+ affine (DICOM's frame of reference)."""
    return _FLIP_XY @ np.asarray(affine_ras, dtype=np.float64)


@dataclass(frozen=True)
class Geometry:
    """The grid of a 3D array: its spatial shape and its voxel -> RAS+ affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @classmethod
    def of(cls, shape: tuple[int, ...], affine: np.ndarray) -> Geometry:
        """The grid of an array of ``shape`` (spatial axes first; trailing axes ignored)."""
        spatial = tuple(int(n) for n in shape[:3])
        return cls(spatial, np.asarray(affine, dtype=np.float64))  # type: ignore[arg-type]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (norms of the affine's columns)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))

    @property
    def axcodes(self) -> str:
        """Orientation code, e.g. ``"RAS"`` or ``"LPS"``: where each array axis points."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    def same_grid(self, other: Geometry, atol: float = GRID_TOLERANCE_MM) -> bool:
        """Whether ``other`` is this grid: same shape and affines equal within ``atol`` mm."""
        return self.shape == other.shape and bool(
            np.allclose(self.affine, other.affine, rtol=0.0, atol=atol)
        )

    def describe(self) -> str:
        """``shape (..), spacing (..) mm, axcodes``, for messages."""
        spacing = ", ".join(f"{s:.3g}" for s in self.spacing)
        return f"shape {self.shape}, spacing ({spacing}) mm, {self.axcodes}"
