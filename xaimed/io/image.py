"""Read an image file that is not a case (a map, a mask) in any file format xaimed reads.

Runs write map volumes in ``outputs.format``; the report and evaluate read them back through
:func:`read_image_arrays`, so that every format a run writes can be read. Masks and label maps
given on a case's grid are read as Volumes by :func:`read_image`.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from xaimed.io.itk import is_itk, read_itk, read_itk_arrays
from xaimed.io.nifti import read_nifti
from xaimed.volume import Volume


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


def read_image(path: Path) -> Volume:
    """The NIfTI, NRRD or MetaImage file at ``path`` as a float32 Volume (by its suffix; other
    names are tried as NIfTI); raises InputError naming the file when it cannot be read."""
    return read_itk(path) if is_itk(path) else read_nifti(path)
