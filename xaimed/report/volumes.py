"""The volumes the case page's viewer shows: the source and each map, as small NIfTI copies
wrapped in JavaScript files.

Browsers refuse ``fetch`` and XHR of ``file://`` URLs, but run any ``<script src>`` next to the
page. So each volume is a gzipped NIfTI, base64-encoded inside a one-line script that hands it
to the page: the report opens by double-click, from a shared drive or from any static web
server, with no local server. A volume larger than ``max_size`` voxels along an axis is
subsampled by a whole stride (every f-th voxel along each axis); its affine is scaled by the
same stride so that every kept voxel keeps its world position. The stride is recorded in the
case data and shown on the page.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from xaimed.errors import InputError


@dataclass(frozen=True)
class ViewerVolume:
    """A volume ready for the viewer: voxels, RAS affine, and the stride it was subsampled by."""

    array: np.ndarray
    affine: np.ndarray
    stride: int


def stride_for(shape: tuple[int, ...], max_size: int) -> int:
    """The smallest whole stride that brings every spatial axis to at most ``max_size``."""
    return max(1, math.ceil(max(shape[:3]) / max_size))


def subsample(array: np.ndarray, affine: np.ndarray, stride: int) -> ViewerVolume:
    """Every ``stride``-th voxel along each axis, with the affine of the kept voxels."""
    if stride == 1:
        return ViewerVolume(array, affine, 1)
    scaled = affine.copy()
    scaled[:3, :3] = affine[:3, :3] * stride
    return ViewerVolume(np.ascontiguousarray(array[::stride, ::stride, ::stride]), scaled, stride)


def read_map(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A map's voxels (float32, first volume of a 4D file) and its affine, in any format a run
    writes (NIfTI, NRRD, MetaImage)."""
    from xaimed.io.image import read_image_arrays

    array, affine = read_image_arrays(path)
    while array.ndim > 3:
        array = array[..., 0]
    return array, affine


def read_source(
    case_id: str, source: Path, config_json: Path | None, shape: tuple[int, ...]
) -> np.ndarray:
    """The source image's voxels on the map's grid (first channel): NIfTI, NRRD, MetaImage or
    DICOM.

    Only the voxels are kept: headers (and with them any name or identifier a DICOM or NIfTI
    header holds) never reach the report.
    """
    if not source.exists():
        raise InputError(
            f"case {case_id}: source {source} (from the manifest) does not exist; restore it "
            "to show the image under the map."
        )
    from xaimed.io.image import read_image_arrays
    from xaimed.io.itk import is_itk
    from xaimed.io.nifti import is_nifti

    if source.is_file() and (is_nifti(source) or is_itk(source)):
        array = read_image_arrays(source, dtype=None)[0]
    else:
        array = _read_dicom_source(case_id, source, config_json)
    while array.ndim > 3:
        array = array[..., 0]
    if _plane(array.shape) == _plane(tuple(shape)):
        # A 2D image and a plane of depth 1 are the same picture: a 2D DICOM image is read as a
        # plane, its map is a 2D file; a 2D image's NRRD/MetaImage map off z = 0 is a depth-1
        # 3D file (xaimed.writers.itk).
        array = array.reshape(shape)
    if tuple(array.shape) != tuple(shape):
        raise InputError(
            f"case {case_id}: source {source} has shape {tuple(array.shape)}, its map "
            f"{tuple(shape)}; the source changed after the run, run the case again."
        )
    if np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize <= 2:
        return np.ascontiguousarray(array)
    return np.ascontiguousarray(array, dtype=np.float32)


def _plane(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` without a trailing depth of 1 (X, Y, 1 -> X, Y)."""
    return shape[:2] if len(shape) == 3 and shape[2] == 1 else shape


def _read_dicom_source(case_id: str, source: Path, config_json: Path | None) -> np.ndarray:
    # The same reader the run used (series selection per the run's dicom section), so the
    # voxels are those the map was computed on.
    from xaimed.config import load_config
    from xaimed.io.case import Case
    from xaimed.io.read import read_case

    if config_json is None or not config_json.is_file():
        raise InputError(
            f"case {case_id}: the run folder has no config.json, needed to read its DICOM "
            "source; give the run folder `xaimed explain` wrote."
        )
    config = load_config(config_json)
    # Located like a case-list entry: the study of that folder with this case's id, or its only
    # study (a case list names DICOM cases with ids of its own).
    try:
        return np.asarray(read_case(Case(case_id, source, format=None), config).array)
    except InputError:
        raise InputError(
            f"case {case_id}: its source {source} no longer holds it; restore it."
        ) from None


def quantised(array: np.ndarray) -> tuple[np.ndarray, float]:
    """``array`` as int16 and the step one unit stands for (its largest magnitude / 32767).

    Float maps hardly compress (their low mantissa bits are noise), so a float32 copy would make
    a cohort's report many times larger than its maps' PNGs; 16 bits resolve 1/32767 of the
    largest value, far below what a colour map shows. Integer images of 16 bits or less are
    kept as they are (step 1.0)."""
    if np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize <= 2:
        return array, 1.0
    values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(np.abs(values).max()) if values.size else 0.0
    step = top / 32767.0 if top > 0 else 1.0
    return np.round(values / step).astype(np.int16), step


def nifti_bytes(volume: ViewerVolume) -> tuple[bytes, float]:
    """A gzipped NIfTI-1 of ``volume`` (16-bit, see :func:`quantised`) with a fresh header: only
    voxels, affine and scaling, so no name or identifier of the source's header is carried.
    Returns the bytes and the quantisation step (``scl_slope``)."""
    data, step = quantised(volume.array)
    image = nib.Nifti1Image(data, volume.affine)
    image.set_qform(volume.affine, code=1)
    image.set_sform(volume.affine, code=1)
    image.header.set_slope_inter(step, 0.0)
    # A display range the viewer trusts instead of its own percentile guess: symmetric about 0
    # for a signed map (the page sets it again from its threshold).
    values = volume.array[np.isfinite(volume.array)] if volume.array.size else volume.array
    if values.size:
        low, high = float(values.min()), float(values.max())
        if low < 0 < high:
            high = max(-low, high)
            low = -high
        if high > low:
            image.header["cal_min"], image.header["cal_max"] = low, high
    # mtime=0: the same run gives byte-identical report files.
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0), step


def write_volume_script(path: Path, key: str, payload: bytes) -> int:
    """Write ``payload`` as a script that registers it under ``key``; returns the file size."""
    text = (
        f'XAIMED_REPORT.volume({json.dumps(key)},"{base64.b64encode(payload).decode("ascii")}");\n'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="ascii")
    return len(text)
