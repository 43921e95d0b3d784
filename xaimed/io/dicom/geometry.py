"""Geometry of a stack of parallel planes: sort, check, and the voxel -> world affine.

DICOM gives every plane its own position and orientation; a volume needs one regular grid. This
module decides whether the planes form one (same orientation, slices along the normal, one
spacing) and refuses, with the reason, when they do not. Sorting is by position projected on the
slice normal, never by Instance Number or file name, and the spacing comes from positions, never
from Slice Thickness.

Voxel axes of the Volume: i along a row (column index), j along a column (row index), k across
slices in increasing position along the normal. This is also what ITK, dcm2niix and dicom2nifti
store. LPS -> RAS is :func:`xaimed.geometry.lps_to_ras`, xaimed's one conversion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xaimed.errors import InputError
from xaimed.geometry import Geometry, lps_to_ras
from xaimed.io.dicom.frames import Frame

# Direction cosines in real headers carry 5-7 decimals; planes within this are "the same".
ORIENTATION_TOLERANCE = 1e-4
# Slices whose step deviates from the median step by more than this fraction are irregular
# (a missing slice is a 100 % deviation; scanner rounding stays far below 0.1 %).
SPACING_TOLERANCE = 0.01
# Angle between the stacking direction and the slice normal above which the stack is tilted.
TILT_TOLERANCE_DEG = 0.05


@dataclass(frozen=True)
class Stack:
    """Planes sorted along the normal and the regular grid they are read onto.

    ``offsets`` holds each plane's k coordinate on the grid: ``0 .. n-1`` for a regular stack,
    fractional values when an irregular stack was resampled (only when the config opts in).
    """

    frames: list[Frame]
    affine_lps: np.ndarray
    shape: tuple[int, int, int]
    offsets: np.ndarray
    is_2d: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def geometry(self) -> Geometry:
        """The grid the stack is read onto, voxel -> RAS+ like every grid in xaimed."""
        return Geometry.of(self.shape, lps_to_ras(self.affine_lps))

    @property
    def resampled(self) -> bool:
        """Whether the grid differs from the source planes (irregular spacing resampled)."""
        return len(self.frames) != self.shape[2] or not np.allclose(
            self.offsets, np.arange(len(self.frames))
        )


def normal_of(orientation: np.ndarray) -> np.ndarray:
    """The slice normal (row cosine x column cosine), unit length."""
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / np.linalg.norm(normal)


def build_stack(
    frames: list[Frame],
    *,
    where: str,
    min_slices: int = 3,
    resample_irregular: bool = False,
) -> Stack:
    """Sort and check ``frames`` (one series) and compute their grid.

    ``where`` names the series in messages. Raises InputError for planes of different sizes or
    orientations, duplicate positions, gantry tilt, too few slices, and (unless
    ``resample_irregular``) inconsistent spacing.
    """
    if not frames:
        raise InputError(f"{where}: the series holds no image planes; choose another series.")
    first = frames[0]
    for frame in frames:
        if (frame.rows, frame.columns) != (first.rows, first.columns) or not np.allclose(
            frame.pixel_spacing, first.pixel_spacing, rtol=1e-4
        ):
            raise InputError(
                f"{where}: planes differ in matrix size or pixel spacing ({first.rows}x"
                f"{first.columns} vs {frame.rows}x{frame.columns}); it is not one volume, "
                "choose another series."
            )
    orientations = np.array([f.orientation for f in frames])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        n = len({tuple(np.round(o, 3)) for o in orientations})
        raise InputError(
            f"{where}: the slices have {n} different orientations, so they do not form one "
            "volume; export each stack as its own series."
        )
    row, col = first.orientation[:3], first.orientation[3:]
    normal = normal_of(first.orientation)
    along = np.array([f.position @ normal for f in frames])
    order = np.argsort(along, kind="stable")
    frames = [frames[i] for i in order]
    along = along[order]
    n = len(frames)
    affine = np.eye(4)
    affine[:3, 0] = row * first.pixel_spacing[1]
    affine[:3, 1] = col * first.pixel_spacing[0]
    affine[:3, 3] = frames[0].position
    if n == 1:
        # One plane: a 2D image. xaimed's 2D convention: the third column is the plane's unit
        # normal (1 mm), whatever the slice thickness, so every 2D image has the same shape of
        # affine whether it came from a CT slice, a radiograph or a 2D NIfTI.
        affine[:3, 2] = normal
        return Stack(frames, affine, (first.columns, first.rows, 1), np.zeros(1), is_2d=True)
    if n < min_slices:
        raise InputError(
            f"{where}: only {n} slices, fewer than dicom.min_slices ({min_slices}); the series "
            "is incomplete, or lower dicom.min_slices if that is intended."
        )
    steps = np.diff(along)
    if steps.min() < 1e-3 * max(float(np.median(steps)), 1e-3):
        dupes = int(np.sum(steps < 1e-3 * max(float(np.median(steps)), 1e-3))) + 1
        raise InputError(
            f"{where}: {dupes} slices share one position (several acquisitions or time points "
            "in one series), so they do not form one volume; export one volume per series."
        )
    total = frames[-1].position - frames[0].position
    tilt = np.degrees(np.arccos(np.clip(abs(total @ normal) / np.linalg.norm(total), -1, 1)))
    if tilt > TILT_TOLERANCE_DEG:
        raise InputError(
            f"{where}: the slices are tilted by {tilt:.2f} degrees against their stacking "
            "direction (gantry tilt); xaimed does not resample tilted stacks, reconstruct the "
            "series without tilt."
        )
    median = float(np.median(steps))
    deviation = np.abs(steps - median) / median
    warnings: list[str] = []
    if deviation.max() > SPACING_TOLERANCE:
        worst = int(np.argmax(deviation))
        message = (
            f"{where}: slice spacing is inconsistent ({steps.min():.3g} to {steps.max():.3g} mm, "
            f"e.g. {steps[worst]:.3g} mm after slice {worst + 1} of {n}: a missing slice?)"
        )
        if not resample_irregular:
            raise InputError(
                f"{message}; set dicom.resample_irregular: true to resample onto a regular grid."
            )
        count = round(float(along[-1] - along[0]) / median) + 1
        spacing = float(along[-1] - along[0]) / (count - 1)
        offsets = (along - along[0]) / spacing
        affine[:3, 2] = total / np.linalg.norm(total) * spacing
        warnings.append(
            f"{message}; resampled onto {count} slices {spacing:.4g} mm apart "
            "(dicom.resample_irregular) by linear interpolation between neighbouring slices."
        )
        return Stack(frames, affine, (first.columns, first.rows, count), offsets, False, warnings)
    affine[:3, 2] = total / (n - 1)
    return Stack(frames, affine, (first.columns, first.rows, n), np.arange(n, dtype=float))
