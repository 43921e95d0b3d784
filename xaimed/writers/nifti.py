"""Write attribution maps as float32 NIfTI on the source grid, geometry copied exactly."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from xaimed.volume import Volume
from xaimed.writers.atomic import atomic_path

# NIfTI's intent code for "an estimate of some parameter" (nifti1.h NIFTI_INTENT_ESTIMATE).
INTENT_ESTIMATE = 1001
# nifti1.h NIFTI_INTENT_LABEL: voxel values are indices into a list of labels.
INTENT_LABEL = 1002
# The header's intent_name field holds 16 bytes including the terminating NUL.
INTENT_NAME_BYTES = 15


def _display_range(data: np.ndarray) -> tuple[float, float]:
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 0.0
    lo, hi = float(finite.min()), float(finite.max())
    if lo < 0 < hi:
        # Signed map: a symmetric range keeps zero at the centre of a diverging colour map.
        m = max(-lo, hi)
        return -m, m
    return lo, hi


def _image_like_source(volume: Volume, data: np.ndarray) -> nib.Nifti1Image:
    src_header = volume.source.header
    if isinstance(src_header, nib.Nifti1Header):  # Nifti2Header subclasses it
        # Native little-endian: some tools mis-read big-endian data.
        if src_header.endianness == "<":
            header = src_header.copy()
        else:
            header = src_header.as_byteswapped("<")
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        img = image_class(data, None, header=header)
        qform, qcode = src_header.get_qform(coded=True)
        sform, scode = src_header.get_sform(coded=True)
        img.set_qform(qform, code=int(qcode))
        img.set_sform(sform, code=int(scode))
    else:
        img = nib.Nifti1Image(data, volume.affine)
        img.set_qform(volume.affine, code=1)
        img.set_sform(volume.affine, code=1)
    img.set_data_dtype(data.dtype)
    # No scaling: stored values are the values.
    img.header["scl_slope"] = np.nan
    img.header["scl_inter"] = np.nan
    return img


def write_label_map(volume: Volume, path: Path, *, labels: dict[int, str]) -> Path:
    """Write an integer label map on the source grid (intent LABEL), geometry as for maps."""
    data = np.asarray(volume.array, dtype=np.int16)
    img = _image_like_source(volume, data)
    img.header.set_intent(INTENT_LABEL, (), name="dominant class")
    img.header["cal_min"], img.header["cal_max"] = 0, max(labels) if labels else 0
    names = ", ".join(f"{i}={n}" for i, n in sorted(labels.items()))
    img.header["descrip"] = f"xaimed dominant class: {names}"[:79].encode()
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def write_nifti_map(volume: Volume, path: Path, *, method: str) -> Path:
    """Write ``volume`` (a map made by ``source.with_array``) as float32 NIfTI at ``path``.

    A map of a 2D image (``volume.is_2d``) is written as a 2D NIfTI, shape (X, Y).

    When the source is NIfTI its header is copied and qform and sform are set from it *with their
    codes*: ``Nifti1Image(data, affine)`` alone resets the codes, and viewers disagree on which of
    the two transforms they read. Other sources get both transforms from the Volume's affine with
    code 1 (scanner).
    """
    data = np.asarray(volume.array, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"a map must be 3D, got shape {data.shape}")
    if volume.is_2d:
        # A map of a 2D image is a 2D image, (X, Y), like its source: viewers then show a plane.
        data = data[..., 0]
    img = _image_like_source(volume, data)
    hdr = img.header
    lo, hi = _display_range(data)
    hdr["cal_min"], hdr["cal_max"] = lo, hi
    hdr.set_intent(INTENT_ESTIMATE, (), name=method[:INTENT_NAME_BYTES])
    hdr["descrip"] = b"xaimed attribution map; research use"
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
