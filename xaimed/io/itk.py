"""Read NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) files with SimpleITK.

ITK places voxels in LPS+ (origin, spacing, direction); the Volume's affine is RAS+, converted
once here with :func:`xaimed.geometry.lps_to_ras`. SimpleITK's array is (z, y, x[, component]);
the Volume's axes are ITK's (x, y, z), components (vector images) on axis 3 like a 4D NIfTI.
A 2D file is read as xaimed holds 2D images (like a 2D NIfTI): a plane of depth 1 whose
affine's third column is the plane's unit normal, ``meta["spatial_dims"] = 2``.
SimpleITK is imported when a file is read (it takes about a second to import): discovery and
case lists only look at names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xaimed.errors import InputError
from xaimed.geometry import lps_to_ras
from xaimed.io.case import Case, cases_by_stem
from xaimed.io.itk_header import check_data_files, detached_data_file, header_fields, suffix_of
from xaimed.io.nifti import plane_affine
from xaimed.io.safety import check_declared_size, escape_text
from xaimed.volume import Source, Volume

if TYPE_CHECKING:
    import SimpleITK as sitk

    from xaimed.config import Config

# File suffix -> the Source.format of its volumes (detached headers share their format's name).
ITK_FORMATS = {".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "metaimage", ".mhd": "metaimage"}
ITK_SUFFIXES = tuple(ITK_FORMATS)


def is_itk(path: Path) -> bool:
    """Whether ``path`` names a NRRD or MetaImage file (or detached header) by its suffix."""
    return path.suffix.lower() in ITK_FORMATS


def itk_stem(path: Path) -> str:
    """File name without its NRRD/MetaImage suffix."""
    return path.stem


@dataclass(frozen=True)
class ItkGeometry:
    """A source's geometry as ITK stored it (LPS+), kept as the Volume's source header so that
    maps written back in an ITK format carry the very same numbers, not ones recomputed from
    the RAS+ affine."""

    origin: tuple[float, ...]
    spacing: tuple[float, ...]
    direction: tuple[float, ...]  # row-major DxD; column j is the direction of index axis j

    @classmethod
    def of(cls, image: sitk.Image) -> ItkGeometry:
        """The geometry of ``image``."""
        return cls(image.GetOrigin(), image.GetSpacing(), image.GetDirection())

    @property
    def affine(self) -> np.ndarray:
        """The voxel -> RAS+ affine (ITK's own is LPS+); a 2D image's plane lies at z = 0 of
        its 2D world (L, P) and its third column is the plane's unit normal."""
        dims = len(self.spacing)
        direction = np.asarray(self.direction, dtype=np.float64).reshape(dims, dims)
        affine = np.eye(4)
        affine[:dims, :dims] = direction @ np.diag(np.asarray(self.spacing, dtype=np.float64))
        affine[:dims, 3] = self.origin
        affine = lps_to_ras(affine)
        return plane_affine(affine) if dims == 2 else affine


def itk_arrays(image: sitk.Image, dtype: type | None = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """An ITK image's voxels on its index axes (x, y[, z][, component]) and its RAS+ affine;
    ``dtype`` None keeps the file's voxel type. A 2D image's voxels stay 2D (X, Y[, C]), like
    nibabel's of a 2D NIfTI."""
    import SimpleITK as sitk

    array = sitk.GetArrayViewFromImage(image)
    # (z, y, x[, c]) -> (x, y, z[, c]): the Volume's axes are ITK's index axes.
    axes = tuple(reversed(range(image.GetDimension())))
    if image.GetNumberOfComponentsPerPixel() > 1:
        axes += (len(axes),)
    # Values beyond float32 become infinite here; preprocessing refuses them with a sentence
    # (or fills them, preprocessing.nan_fill), so numpy's overflow warning would only be noise.
    with np.errstate(over="ignore", invalid="ignore"):
        data = np.ascontiguousarray(np.transpose(array, axes), dtype=dtype)
    return data, ItkGeometry.of(image).affine


def read_itk_arrays(path: Path, dtype: type | None = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """A written map (or source) file's voxels and RAS+ affine, for the report and evaluate;
    raises ValueError when the file cannot be read."""
    import SimpleITK as sitk

    try:
        check_data_files(path, escape_text(str(path)))
    except InputError as error:
        raise ValueError(str(error)) from None
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise ValueError(
            f"{escape_text(str(path))} is not a readable NRRD or MetaImage file"
        ) from None
    return itk_arrays(image, dtype)


def read_itk(path: Path, *, case_id: str | None = None, memory_budget: int | None = None) -> Volume:
    """Read a 2D or 3D NRRD or MetaImage file into a float32 Volume (components on axis 3; a
    2D image as a plane of depth 1, ``meta["spatial_dims"] = 2``).

    The header is read first, so that the declared size is checked against ``memory_budget``
    (bytes; default: the memory available now) before any voxel is; then the voxels are read
    here, not lazily, so that a missing or corrupt data file (``.nhdr``/``.mhd`` keep their
    voxels in another file) fails now with a message naming it.
    """
    where = f"case {case_id}: {escape_text(str(path))}" if case_id else escape_text(str(path))
    if not path.is_file():
        raise InputError(f"{where}: file not found; check the input path.")
    if path.stat().st_size == 0:
        raise InputError(f"{where}: the file is empty; re-export the image or remove it.")
    check_data_files(path, where)  # before ITK opens any file the header names
    fields = header_fields(path)  # read once for the checks below
    data_file = detached_data_file(path, fields)
    if data_file is not None and not data_file.is_file():
        raise InputError(
            f"{where}: its voxel data file {escape_text(str(data_file))} does not exist; "
            "restore it next to the header (or fix the header's data file name)."
        )
    _check_metaimage_dims(path, where, fields)
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(
            f"{where}: not a readable NRRD or MetaImage header; re-export the image or remove it."
        ) from None
    size = tuple(int(n) for n in reader.GetSize())
    if len(size) not in (2, 3):
        raise _dimensions_error(where, len(size))
    components = int(reader.GetNumberOfComponents())
    check_declared_size(size + ((components,) if components > 1 else ()), where, memory_budget)
    dims = len(size)
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dims, dims)
    if not np.all(np.isfinite(direction)) or abs(float(np.linalg.det(direction))) < 1e-6:
        # ITK refuses such a header only when it reads the voxels, in words that would blame
        # the voxel data below.
        raise InputError(
            f"{where}: the header's space directions are singular (two axes point the same way, "
            "or one is zero); fix the header's directions."
        )
    _check_metaimage_data(path, where, data_file, fields)
    try:
        image = reader.Execute()
    except RuntimeError:
        holder = escape_text(str(data_file or path))
        raise InputError(
            f"{where}: the voxel data in {holder} cannot be read, the file is truncated or "
            "corrupt; re-export the image."
        ) from None
    data, affine = itk_arrays(image)
    meta = {}
    if len(size) == 2:  # a 2D image: one plane of depth 1, xaimed's convention for 2D
        data, meta = np.expand_dims(data, 2), {"spatial_dims": 2}
    source = Source(path, ITK_FORMATS[suffix_of(path)], ItkGeometry.of(image))
    try:
        return Volume(array=data, affine=affine, source=source, meta=meta)
    except ValueError:
        raise InputError(
            f"{where}: unusable geometry (the direction is singular or not finite); fix the "
            "header's direction and spacing."
        ) from None


class ItkReader:
    """A NRRD or MetaImage file (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``), read with SimpleITK."""

    name = "itk"
    kind = "NRRD or MetaImage files (.nrrd, .nhdr, .mha, .mhd)"

    def discover(self, files: list[Path], root: Path) -> list[Case]:
        """One case per NRRD/MetaImage file (a detached header, not its data file), sorted by
        path, named by the file's stem (and, for one file name in several subfolders, by its path
        relative to ``root``)."""
        return cases_by_stem([p for p in files if is_itk(p)], root, itk_stem, self.name)

    def locate(self, case: Case) -> Case | None:
        """A NRRD or MetaImage file (its header, when detached) is its own case."""
        return (
            replace(case, format=self.name) if case.path.is_file() and is_itk(case.path) else None
        )

    def read(self, case: Case, config: Config) -> Volume:
        """The file's Volume."""
        return read_itk(
            case.path, case_id=case.case_id, memory_budget=config.runtime.memory_budget_bytes
        )


def _check_metaimage_dims(path: Path, where: str, fields: dict[str, str]) -> None:
    """Refuse a MetaImage header whose ``NDims`` is not 2 or 3 before SimpleITK reads it: its
    MetaImage parser crashes the process (segmentation fault) on a negative or huge NDims."""
    if suffix_of(path) not in (".mha", ".mhd"):
        return
    ndims = fields.get("ndims", "")
    if not ndims.isdigit():
        raise InputError(
            f"{where}: not a readable MetaImage header (NDims is {ndims[:20]!r}); re-export the "
            "image or remove it."
        )
    if int(ndims) not in (2, 3):
        raise _dimensions_error(where, int(ndims))


def _dimensions_error(where: str, dims: int) -> InputError:
    # A 4D file is often sequences or channels stacked on a 4th axis: say how those are read.
    channels = (
        " (channels as a vector image, or one file per channel with preprocessing.channels)"
        if dims == 4
        else ""
    )
    return InputError(
        f"{where}: the image has {dims} dimension{'' if dims == 1 else 's'}, xaimed reads 2D "
        f"and 3D NRRD and MetaImage images; export it as a 2D image or a 3D volume{channels}."
    )


# Bytes per voxel component of the MetaImage element types whose size MetaIO fixes.
_METAIMAGE_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip


def _check_metaimage_data(
    path: Path, where: str, data_file: Path | None, fields: dict[str, str]
) -> None:
    """Refuse uncompressed MetaImage voxel data shorter than its header declares before
    SimpleITK reads it: MetaIO prints its own complaint ("M_ReadElementsData: data not read
    completely") straight to the process's stderr, which no Python code can catch."""
    if suffix_of(path) not in (".mha", ".mhd"):
        return
    element = _METAIMAGE_BYTES.get(fields.get("elementtype", "").upper())
    header_size = fields.get("headersize", "0").strip() or "0"
    sizes = fields.get("dimsize", "").split()
    channels = fields.get("elementnumberofchannels", "1").strip() or "1"
    if (
        element is None
        or fields.get("compresseddata", "false").lower() == "true"
        # ASCII voxels (BinaryData = False) take more bytes than the element size says.
        or fields.get("binarydata", "true").strip().lower() == "false"
        or header_size != "0"
        or not all(n.isdigit() for n in [*sizes, channels])
    ):
        return  # compressed or unusual: SimpleITK checks it, as before
    expected = int(np.prod([int(n) for n in sizes])) * int(channels) * element
    if data_file is not None:
        holder, available = data_file, data_file.stat().st_size
    elif fields.get("elementdatafile", "").upper() == "LOCAL":
        with path.open("rb") as fh:  # the header only, not a file of many GB
            head = fh.read(65536)
        marker = head.find(b"ElementDataFile")
        end = head.find(b"\n", marker)
        if marker < 0 or end < 0:
            return
        holder, available = path, path.stat().st_size - (end + 1)
    else:
        return
    if available < expected:
        raise InputError(
            f"{where}: the voxel data in {escape_text(str(holder))} is truncated ({available} "
            f"bytes where the header declares {expected}); re-export the image."
        )
