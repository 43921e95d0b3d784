"""Write maps as NRRD (``.nrrd``) or MetaImage (``.mha``) with SimpleITK, on the source grid.

The geometry is the source's: an NRRD/MetaImage source's own origin, spacing and direction
(:class:`xaimed.io.itk.ItkGeometry`) when the map is on its grid, else the Volume's RAS+ affine
converted once to ITK's LPS+ with :func:`xaimed.geometry.ras_to_lps`. A map of a 2D image
(``volume.is_2d``) is a 2D file like its source, when its plane is one a 2D ITK image can hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xaimed.geometry import ras_to_lps
from xaimed.io.itk import ItkGeometry
from xaimed.volume import Volume
from xaimed.writers.atomic import atomic_path


def _geometry(volume: Volume) -> ItkGeometry:
    """The ITK geometry of ``volume``: 2D for a 2D image whose plane is z = 0 of the world
    (every 2D NRRD/MetaImage's plane), else 3D."""
    header = volume.source.header
    if isinstance(header, ItkGeometry) and np.allclose(
        header.affine, volume.affine, rtol=0.0, atol=1e-9
    ):
        return header
    lps = ras_to_lps(volume.affine)
    dims = 3
    if volume.is_2d and np.allclose(lps[2, [0, 1, 3]], 0.0, atol=1e-9):
        # A 2D ITK image's world is 2D (L, P): a plane elsewhere (an oblique 2D NIfTI) keeps
        # its geometry only as a 3D file of depth 1.
        dims = 2
    spacing = np.linalg.norm(lps[:dims, :dims], axis=0)
    direction = lps[:dims, :dims] / spacing
    return ItkGeometry(
        tuple(float(v) for v in lps[:dims, 3]),
        tuple(float(v) for v in spacing),
        tuple(float(v) for v in direction.ravel()),
    )


def write_itk(
    volume: Volume, path: Path, *, dtype: type, compress: bool, meta: dict[str, str]
) -> Path:
    """Write the 3D ``volume`` (a map made by ``source.with_array``) at ``path``, a 2D image's
    map as a 2D file (see :func:`_geometry`); the suffix (``.nrrd``, ``.mha``) chooses the
    format. ``meta`` become the header's key/value fields."""
    import SimpleITK as sitk  # about a second to import: only when a map is written in its formats

    data = np.asarray(volume.array, dtype=dtype)
    if data.ndim != 3:
        raise ValueError(f"a map must be 3D, got shape {data.shape}")
    geometry = _geometry(volume)
    if len(geometry.spacing) == 2:
        data = data[..., 0]
    # xaimed's axes are ITK's (x, y, z); SimpleITK takes arrays as (z, y, x).
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.T))
    image.SetOrigin(geometry.origin)
    image.SetSpacing(geometry.spacing)
    image.SetDirection(geometry.direction)
    for key, value in meta.items():
        # One header line per field: a line break in a class name would end the header early.
        image.SetMetaData(key, " ".join(value.split()))
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return path
