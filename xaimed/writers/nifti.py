"""Write attribution maps as float32 NIfTI on the source grid, geometry copied exactly."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from xaimed.volume import Volume
from xaimed.writers.atomic import atomic_path

# NIfTI's intent code for "an estimate of some parameter" (nifti1.h NIFTI_INTENT_ESTIMATE).
INTENT_ESTIMATE = 1001
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


def write_nifti_map(volume: Volume, path: Path, *, method: str) -> Path:
    """Write ``volume`` (a map made by ``source.with_array``) as float32 NIfTI at ``path``.

    When the source is NIfTI its header is copied and qform and sform are set from it *with their
    codes*: ``Nifti1Image(data, affine)`` alone resets the codes, and viewers disagree on which of
    the two transforms they read. Other sources get both transforms from the Volume's affine with
    code 1 (scanner).
    """
    data = np.asarray(volume.array, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"a map must be 3D, got shape {data.shape}")
    src_header = volume.source.header
    if isinstance(src_header, nib.Nifti1Header):  # Nifti2Header subclasses it
        # Native little-endian float32: some tools mis-read big-endian floats.
        header = (
            src_header.copy() if src_header.endianness == "<" else src_header.as_byteswapped("<")
        )
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
    img.set_data_dtype(np.float32)
    hdr = img.header
    # No scaling: stored values are the attribution values.
    hdr["scl_slope"] = np.nan
    hdr["scl_inter"] = np.nan
    lo, hi = _display_range(data)
    hdr["cal_min"], hdr["cal_max"] = lo, hi
    hdr.set_intent(INTENT_ESTIMATE, (), name=method[:INTENT_NAME_BYTES])
    hdr["descrip"] = b"xaimed attribution map; research use"
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
