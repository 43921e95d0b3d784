"""Decode a DICOM series into a Volume: pixel data, per-plane rescale, the RAS affine.

Compressed transfer syntaxes decode through pydicom's pixel handlers with permissively licensed
plugins only (pylibjpeg-openjpeg, pylibjpeg-rle, pyjpegls, python-gdcm); the GPL-licensed
pylibjpeg-libjpeg is never required.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels.utils import get_expected_length

from xaimed.errors import InputError
from xaimed.io.dicom.discovery import DicomSeries
from xaimed.io.dicom.frames import Frame
from xaimed.io.dicom.geometry import Stack, build_stack
from xaimed.io.dicom.planar import (
    FROM_NOTHING,
    NO_SPACING,
    Presentation,
    presentation_values,
    voi_problem,
)
from xaimed.volume import Source, Volume


@dataclass(frozen=True)
class DicomHeader:
    """What the DICOM writers need from the source: stored as ``Volume.source.header``."""

    series: DicomSeries
    stack: Stack
    warnings: list[str] = field(default_factory=list)

    @property
    def datasets(self) -> list[Dataset]:
        """Source headers (no pixel data), one per SOP instance, in slice order."""
        seen: dict[str, Dataset] = {}
        for frame in self.stack.frames:
            seen.setdefault(frame.sop_instance_uid, self.series.headers[frame.sop_instance_uid])
        return list(seen.values())


def _decode(path: Path, where: str) -> Dataset:
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise InputError(
            f"{where}: {path.name} cannot be read ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]}); the file is "
            "truncated or corrupt, re-export the series."
        ) from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(
            f"{where}: {path.name} has no pixel data; re-export the series with its images."
        )
    return ds


# The Image Pixel attributes pydicom needs to size (and decode) native pixel data, by the names
# the standard gives them.
_IMAGE_PIXEL = {
    "Rows": "Rows",
    "Columns": "Columns",
    "SamplesPerPixel": "Samples per Pixel",
    "PhotometricInterpretation": "Photometric Interpretation",
    "BitsAllocated": "Bits Allocated",
}


def _pixel_header_problem(ds: Dataset) -> str | None:
    """What makes a file's pixel data unreadable that its header alone shows, in words: pydicom
    says so too, but in its own terms (and blames "the transfer syntax")."""
    missing = [words for key, words in _IMAGE_PIXEL.items() if ds.get(key) in (None, "")]
    if missing:
        return (
            f"has pixel data but no {', '.join(missing)} in its header; the header is "
            "incomplete, re-export the image"
        )
    try:
        allocated = int(ds.BitsAllocated)
        stored = int(ds.get("BitsStored", allocated) or allocated)
        # pydicom's count of the bytes native data take: rows x columns x samples x frames at
        # Bits Allocated, with native YBR_FULL_422's two values a pixel, 1-bit data packed.
        expected = get_expected_length(ds)
    except (TypeError, ValueError, OverflowError):
        # A value of several numbers (VM > 1) or none where one whole number belongs.
        return (
            "has Rows, Columns, Samples per Pixel, Bits Allocated, Bits Stored or Number of "
            "Frames that is not one whole number; the header is corrupt, re-export the image"
        )
    if allocated > 0 and not 1 <= stored <= allocated:
        return (
            f"declares Bits Stored {stored} with Bits Allocated {allocated} (Bits Stored must lie "
            "between 1 and Bits Allocated); the header is corrupt, re-export the image"
        )
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    data = ds.get("PixelData")
    if syntax is None or syntax.is_compressed or not isinstance(data, bytes):
        return None
    if len(data) < expected:
        return (
            f"holds {len(data)} bytes of pixel data where its header declares {expected}; the "
            "file is truncated, re-export it"
        )
    return None


def _pixels(ds: Dataset, path: Path, where: str) -> np.ndarray:
    problem = _pixel_header_problem(ds)
    if problem is not None:
        raise InputError(f"{where}: {path.name} {problem}.")
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        raise InputError(
            f"{where}: the pixel data of {path.name} ({getattr(syntax, 'name', syntax)}) cannot "
            f"be decoded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); the file is "
            "truncated or uses an unsupported compression, re-export it uncompressed."
        ) from None


def read_dicom_series(
    series: DicomSeries,
    *,
    min_slices: int = 3,
    resample_irregular: bool = False,
    voi_lut: str = "apply",
    where: str | None = None,
) -> Volume:
    """Read ``series`` into a float32 Volume with a RAS affine (see geometry.py for the axes).

    Rescale Slope / Intercept are applied per plane. A single plane gives a 2D Volume
    (``meta["spatial_dims"] == 2``, shape (X, Y, 1), the affine's third column the plane's unit
    normal); a single-frame 2D image (radiograph, secondary capture) goes through the grayscale
    pipeline of :func:`xaimed.io.dicom.planar.presentation_values`, the VOI LUT applied to
    radiographs when ``voi_lut`` is "apply". Raises InputError with the reason for a series
    that does not form one volume or cannot be decoded.
    """
    where = where or f"series {series.label}"
    if series.broken:
        raise InputError(
            f"{where}: {series.broken[0].name} beside its files is a truncated or corrupt DICOM "
            "file that may be one of its slices; re-export the series or remove that file."
        )
    stack = build_stack(
        series.frames,
        where=where,
        min_slices=min_slices,
        resample_irregular=resample_irregular,
    )
    try:
        array, presentation = _planes(stack, where, voi_lut)
    except (ValueError, IndexError, TypeError, OverflowError) as exc:
        # Headers that disagree with the pixel data (frame counts, plane sizes) in a corrupt or
        # hand-edited file: the planes do not form one volume.
        raise InputError(
            f"{where}: the decoded planes do not match their headers ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]}); re-export the series."
        ) from None
    if stack.resampled:
        array = _resample_slices(array, stack.offsets, stack.shape[2])
    first = stack.frames[0]
    warnings = list(stack.warnings)
    if first.spacing_source == NO_SPACING:
        warnings.append(
            f"{where}: the image has no Pixel Spacing or Imager Pixel Spacing; read with 1 mm "
            "pixels (distances in mm and resampling to a model spacing are then nominal)."
        )
    if first.geometry == FROM_NOTHING:
        warnings.append(
            f"{where}: the image has no Patient Orientation; its rows and columns are placed "
            "along DICOM's identity directions, which may not be the patient's."
        )
    header = DicomHeader(series, stack, warnings)
    meta: dict[str, Any] = {
        "spatial_dims": 2 if stack.is_2d else 3,
        "series_uid": series.series_uid,
        "warnings": warnings,
        # (between rows, between columns) mm, and the attribute it came from (a radiograph may
        # only have Imager Pixel Spacing, at the detector).
        "pixel_spacing": list(first.pixel_spacing),
        "pixel_spacing_source": first.spacing_source,
        "geometry_source": first.geometry,
    }
    if presentation is not None:
        meta["presentation"] = presentation.sidecar_fields()
    try:
        return Volume(
            array=array,
            affine=stack.geometry.affine,
            source=Source(series.files[0].parent, "dicom", header),
            meta=meta,
        )
    except ValueError as exc:
        raise InputError(f"{where}: unusable geometry ({exc}); check the headers.") from None


def _planes(stack: Stack, where: str, voi_lut: str) -> tuple[np.ndarray, Presentation | None]:
    """The stack's planes decoded, rescaled and stacked along k: (cols, rows, k[, samples]),
    and, for a single-frame grey 2D image, what its grayscale pipeline did."""
    decoded: dict[Path, np.ndarray] = {}
    planes = []
    for frame in stack.frames:
        if frame.path not in decoded:
            ds = _decode(frame.path, where)
            pixels = _pixels(ds, frame.path, where)
            if stack.is_2d and (frame.radiograph or not frame.in_patient) and pixels.ndim == 2:
                # A grey 2D image: Modality LUT, VOI LUT, MONOCHROME1, as the standard orders
                # them (a CT or MR slice keeps the per-plane rescale below: its window is for
                # display only, and it is never MONOCHROME1).
                values, presentation = _present(pixels, ds, frame, where, voi_lut)
                return np.swapaxes(values, 0, 1)[:, :, None], presentation
            # pydicom drops the frame axis of a one-frame object; put it back.
            decoded[frame.path] = pixels if int(ds.get("NumberOfFrames", 1)) > 1 else pixels[None]
        pixels = decoded[frame.path][(frame.frame_number or 1) - 1]
        plane = pixels.astype(np.float32) * np.float32(frame.slope) + np.float32(frame.intercept)
        # (rows, cols[, samples]) -> (cols, rows[, samples]): axis 0 runs along a row.
        planes.append(np.swapaxes(plane, 0, 1))
    return np.stack(planes, axis=2), None


def _present(
    pixels: np.ndarray, ds: Dataset, frame: Frame, where: str, voi_lut: str
) -> tuple[np.ndarray, Presentation]:
    """:func:`presentation_values` of one 2D image, its failures as one InputError."""
    apply_voi = frame.radiograph and voi_lut == "apply"
    problem = voi_problem(ds) if apply_voi else None
    if problem is not None:
        raise InputError(
            f"{where}: {frame.path.name} {problem}; set dicom.voi_lut: display to skip the VOI "
            "LUT, or re-export the image."
        )
    try:
        return presentation_values(pixels, ds, apply_voi=apply_voi)
    except (ValueError, IndexError, TypeError, KeyError, NotImplementedError, struct.error) as exc:
        step = "Modality or VOI LUT" if apply_voi else "Modality LUT"
        advice = "set dicom.voi_lut: display to skip the VOI LUT, or " if apply_voi else ""
        raise InputError(
            f"{where}: the {step} of {frame.path.name} cannot be applied ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]}); {advice}re-export the image."
        ) from None


def _resample_slices(array: np.ndarray, offsets: np.ndarray, count: int) -> np.ndarray:
    """Linear interpolation along k from planes at fractional ``offsets`` to ``0 .. count-1``."""
    grid = np.arange(count, dtype=float)
    upper = np.clip(np.searchsorted(offsets, grid, side="right"), 1, len(offsets) - 1)
    lower = upper - 1
    weight = ((grid - offsets[lower]) / (offsets[upper] - offsets[lower])).astype(np.float32)
    shape = [1, 1, count] + [1] * (array.ndim - 3)
    weight = weight.reshape(shape)
    return (1 - weight) * array[:, :, lower] + weight * array[:, :, upper]


def map_on_source_planes(volume: Volume) -> np.ndarray:
    """A map on a DICOM Volume's grid, sampled on the source planes: (planes, rows, cols).

    The identity for a regular stack; for a resampled one, linear interpolation along k at each
    source plane's offset, so that DICOM outputs always describe the source images.
    """
    header: DicomHeader = volume.source.header
    data = np.asarray(volume.array, dtype=np.float32)
    offsets = header.stack.offsets
    if not header.stack.resampled:
        planes = data
    else:
        lower = np.clip(np.floor(offsets).astype(int), 0, data.shape[2] - 1)
        upper = np.clip(lower + 1, 0, data.shape[2] - 1)
        weight = (offsets - lower).astype(np.float32)
        planes = (1 - weight) * data[:, :, lower] + weight * data[:, :, upper]
    return np.ascontiguousarray(np.moveaxis(planes, 2, 0).swapaxes(1, 2))
