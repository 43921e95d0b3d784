"""Ground-truth masks for localisation, on the source grid of their case.

A NIfTI mask must be on the image's grid (same shape and affine). A DICOM SEG (any file that is
not NIfTI) is read with highdicom and sampled onto the image's grid by world position (nearest
segmentation voxel; voxels outside the segmentation's extent are background), so it may come on
the grid of the series it was drawn on, cropped or not; every segment counts as the mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xaimed.errors import InputError
from xaimed.geometry import Geometry, ras_to_lps
from xaimed.io.image import read_image_arrays
from xaimed.io.itk import is_itk
from xaimed.io.nifti import is_nifti, plane_affine
from xaimed.volume import Volume


def read_mask(path: Path, source: Volume, case_id: str) -> np.ndarray:
    """The mask at ``path`` as a boolean array on ``source``'s grid."""
    if is_nifti(path) or is_itk(path):
        return _image_mask(path, source, case_id)
    return _seg_mask(path, source, case_id)


def _image_mask(path: Path, source: Volume, case_id: str) -> np.ndarray:
    """A NIfTI, NRRD or MetaImage label map on the image's grid."""
    try:
        data, affine = read_image_arrays(path, dtype=None)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"case {case_id}: mask {path} cannot be read ({exc}); give a NIfTI, NRRD, "
            "MetaImage or DICOM SEG file."
        ) from None
    shape = data.shape
    if len(shape) == 2:  # a 2D mask: xaimed's plane of depth 1, as the 2D image was read
        shape, affine = (*shape, 1), plane_affine(affine)
    if not Geometry.of(shape, affine).same_grid(source.geometry):
        raise InputError(
            f"case {case_id}: mask {path} is not on the image's grid (shape {data.shape[:3]} vs "
            f"{source.spatial_shape}, or another affine); resample it onto the image."
        )
    return np.asarray(data).reshape(source.spatial_shape) > 0


def _seg_mask(path: Path, source: Volume, case_id: str) -> np.ndarray:
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
        volume = seg.get_volume(combine_segments=True, relabel=True)
    except Exception as exc:  # highdicom raises many kinds for files that are no usable SEG
        raise InputError(
            f"case {case_id}: mask {path} is neither NIfTI nor a readable DICOM SEG with 3D "
            f"geometry ({type(exc).__name__}: {exc}); give a NIfTI, NRRD, MetaImage or DICOM SEG "
            "file."
        ) from None
    labels = np.asarray(volume.array)
    labels = labels.reshape(labels.shape[:3]) if labels.ndim > 3 else labels
    # Source voxel index -> RAS -> LPS -> SEG voxel index, nearest.
    to_seg = np.linalg.inv(volume.affine) @ ras_to_lps(source.affine)
    idx = np.indices(source.spatial_shape).reshape(3, -1)
    seg_idx = np.rint(to_seg[:3, :3] @ idx + to_seg[:3, 3:]).astype(np.int64)
    inside = np.all((seg_idx >= 0) & (seg_idx < np.asarray(labels.shape)[:, None]), axis=0)
    mask = np.zeros(idx.shape[1], dtype=bool)
    mask[inside] = labels[tuple(seg_idx[:, inside])] > 0
    if not mask.any() and (labels > 0).any():
        raise InputError(
            f"case {case_id}: DICOM SEG {path} does not overlap the image in space; check that "
            "it was drawn on this study."
        )
    return mask.reshape(source.spatial_shape)
