"""Read a map or image file back (NIfTI, NRRD or MetaImage) for the report and evaluate.

Runs write map volumes in ``outputs.format``; whatever reads them back goes through
:func:`read_image_arrays`, so that every format a run writes can be read.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from xaimed.io.itk import is_itk, read_itk_arrays


def read_image_arrays(path: Path, dtype: type | None = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """The voxels (as ``dtype``; None: the file's own type) and voxel -> RAS+ affine of the
    NIfTI, NRRD or MetaImage file at ``path``.

    Raises OSError or ValueError (nibabel's ImageFileError for a file that is no NIfTI) when
    the file cannot be read.
    """
    path = Path(path)
    if is_itk(path):
        return read_itk_arrays(path, dtype)
    image = nib.load(str(path))
    return np.asarray(image.dataobj, dtype=dtype), np.asarray(image.affine, dtype=np.float64)
