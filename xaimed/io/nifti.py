"""Read NIfTI files into Volumes with nibabel."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from xaimed.errors import InputError
from xaimed.io.safety import check_declared_size
from xaimed.volume import Source, Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """Whether ``path`` names a NIfTI file by its suffix."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_nifti(path: Path, *, memory_budget: int | None = None) -> Volume:
    """Read a NIfTI-1/2 file into a float32 Volume (scaling applied, header kept for writing).

    The voxel data are read here, not lazily, so that a truncated or corrupt file fails now with
    a message naming it, not later inside a method. The size the header declares is checked
    first against ``memory_budget`` (bytes; default: the memory available now).
    """
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; check the input path.") from None
    except Exception as exc:
        raise InputError(
            f"{path}: not a readable NIfTI file ({type(exc).__name__}: {_one_line(exc)}); "
            "re-export or remove it."
        ) from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{path}: {type(img).__name__} is not NIfTI; convert it to NIfTI.")
    check_declared_size(img.shape, str(path), memory_budget)
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:
        raise InputError(
            f"{path}: voxel data cannot be read, the file is truncated or corrupt "
            f"({type(exc).__name__}: {_one_line(exc)}); re-export it."
        ) from None
    header = img.header.copy()
    affine, meta = img.affine, {}
    if data.ndim == 2:  # a 2D image: one plane of depth 1, xaimed's convention for 2D
        data, affine, meta = data[..., None], plane_affine(img.affine), {"spatial_dims": 2}
    try:
        return Volume(array=data, affine=affine, source=Source(path, "nifti", header), meta=meta)
    except ValueError as exc:
        raise InputError(
            f"{path}: unusable geometry ({_one_line(exc)}); fix the header's qform/sform."
        ) from None


def plane_affine(affine: np.ndarray) -> np.ndarray:
    """The affine of a 2D image with its third column the unit normal of the image plane.

    A 2D NIfTI's third column comes from pixdim[3], which 2D writers leave at any value (0
    included); the plane's own normal (the right-handed cross product of its two axes, 1 mm
    long) makes every 2D image's affine invertible and alike.
    """
    out = np.array(affine, dtype=np.float64)
    normal = np.cross(out[:3, 0], out[:3, 1])
    length = float(np.linalg.norm(normal))
    if length > 0:
        out[:3, 2] = normal / length
    return out


def _one_line(exc: Exception) -> str:
    # nibabel's messages may span lines ("... from x.nii\n - could the file be damaged?").
    return " ".join(str(exc).split())
