"""One record per image plane, whether it comes from a classic file or a multi-frame frame.

Classic CT/MR store one plane per file with its geometry at the top level; enhanced multi-frame
objects store many planes in one file with the geometry in the shared and per-frame functional
groups. Everything downstream (sorting, checks, the affine, the writers' references) works on
these records, so both layouts go through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from xaimed.errors import InputError
from xaimed.io.dicom.planar import (
    FROM_PATIENT_PLANE,
    NO_SPACING,
    PLANAR_SOP_CLASSES,
    RADIOGRAPH_SOP_CLASSES,
    is_planar,
    pixel_spacing,
    plane_without_position,
)


@dataclass(frozen=True)
class Frame:
    """One image plane: where it lies (DICOM LPS), its pixel grid and its value rescale."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    frame_number: int | None  # 1-based for multi-frame objects, None for a classic file
    position: np.ndarray  # Image Position (Patient), LPS mm: centre of the first pixel
    orientation: np.ndarray  # Image Orientation (Patient): row and column direction cosines
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm
    rows: int
    columns: int
    slope: float
    intercept: float
    slice_thickness: float | None
    acquisition: str  # Acquisition Number (or multi-frame Stack ID); splits mixed series
    # Where position and orientation came from (planar.FROM_*): a single-frame 2D image without
    # Image Plane attributes is placed from Patient Orientation, or DICOM's identity.
    geometry: str = FROM_PATIENT_PLANE
    spacing_source: str = "PixelSpacing"  # the attribute pixel_spacing came from
    radiograph: bool = False  # a projection radiograph (CR, DX, MG, IO): see dicom.voi_lut

    @property
    def in_patient(self) -> bool:
        """Whether the plane has a real place in the patient (Image Position / Orientation)."""
        return self.geometry == FROM_PATIENT_PLANE


def _first(seq: Any, keyword: str) -> Dataset | None:
    """Item 0 of a functional-group macro sequence, or None."""
    items = getattr(seq, keyword, None) if seq is not None else None
    return items[0] if items else None


def _group(ds: Dataset, index: int, keyword: str) -> Dataset | None:
    """A functional group macro for frame ``index``: per-frame first, then shared."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame):
        item = _first(per_frame[index], keyword)
        if item is not None:
            return item
    shared = ds.get("SharedFunctionalGroupsSequence")
    return _first(shared[0], keyword) if shared else None


def _float_or(value: Any, default: float) -> float:
    try:
        return float(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default


def _geometry_missing(path: Path, what: str) -> InputError:
    return InputError(
        f"{path}: the image has no {what}, so its place in the patient is unknown; "
        "re-export the series with full headers."
    )


def is_multiframe(ds: Dataset) -> bool:
    """Whether ``ds`` carries its plane geometry in functional groups (enhanced multi-frame)."""
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def frames_of(ds: Dataset, path: Path) -> list[Frame]:
    """The image planes of one dataset (read without pixel data), in stored order.

    A header whose geometry values cannot be parsed, or parse to nonsense (NaN positions, zero
    or negative sizes), is an InputError: such files turn up corrupt or hand-edited.
    """
    # The image size is needed for every kind of image; its absence is a plain sentence, not
    # pydicom's text about a missing attribute.
    missing = [name for name in ("Rows", "Columns") if ds.get(name) in (None, "")]
    if missing:
        raise InputError(
            f"{path}: the header has no {' or '.join(missing)} (the image size); re-export the "
            "series with valid headers."
        )
    try:
        frames = _frames_of(ds, path)
    except InputError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise InputError(
            f"{path}: a header value cannot be parsed ({type(exc).__name__}: {detail}); "
            "re-export the series with valid headers."
        ) from None
    for frame in frames:
        _check_geometry(frame)
    return frames


def _check_geometry(frame: Frame) -> None:
    values = np.concatenate([frame.position, frame.orientation, frame.pixel_spacing])
    if not np.all(np.isfinite(values)) or min(frame.pixel_spacing) <= 0:
        raise InputError(
            f"{frame.path}: the plane's position, orientation or pixel spacing is not a finite, "
            "positive value; re-export the series with valid headers."
        )
    if frame.rows <= 0 or frame.columns <= 0 or len(frame.position) != 3:
        raise InputError(
            f"{frame.path}: the header declares {frame.rows} x {frame.columns} pixels or a "
            "position without 3 coordinates; re-export the series with valid headers."
        )


def _frames_of(ds: Dataset, path: Path) -> list[Frame]:
    if is_multiframe(ds):
        return [_enhanced_frame(ds, path, i) for i in range(int(ds.get("NumberOfFrames", 1)))]
    planar = is_planar(ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if str(ds.get("SOPClassUID", "")) in PLANAR_SOP_CLASSES and frames > 1:
        # A radiograph class with several frames (a cine, a tomosynthesis set): its frames are
        # not a volume's planes, and reading one would silently drop the others.
        modality = str(ds.get("Modality", "") or "DICOM")
        raise InputError(
            f"{path}: a multi-frame {modality} image ({frames} frames); xaimed reads "
            "radiographs and secondary captures as single frames only, so export the frame to "
            "explain as a single-frame image."
        )
    if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
        position = np.asarray([float(v) for v in ds.ImagePositionPatient])
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        geometry = FROM_PATIENT_PLANE
    elif planar:
        position, orientation, geometry = plane_without_position(ds)
    else:
        raise _geometry_missing(path, "Image Position / Orientation (Patient)")
    if planar:
        spacing = pixel_spacing(ds)
    elif "PixelSpacing" in ds:
        spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])), "PixelSpacing"
    else:
        raise _geometry_missing(path, "Pixel Spacing")
    if spacing is None:
        # A planar image without any spacing (secondary captures often have none): 1 mm, and
        # the source says so; its pixels are still the image a 2D model expects.
        spacing = (1.0, 1.0), NO_SPACING
    return [
        Frame(
            path=path,
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            frame_number=None,
            position=position,
            orientation=orientation,
            pixel_spacing=spacing[0],
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            slope=_float_or(ds.get("RescaleSlope"), 1.0),
            intercept=_float_or(ds.get("RescaleIntercept"), 0.0),
            slice_thickness=_float_or(ds.get("SliceThickness"), 0.0) or None,
            acquisition=str(ds.get("AcquisitionNumber", "")),
            geometry=geometry,
            spacing_source=spacing[1],
            radiograph=str(ds.SOPClassUID) in RADIOGRAPH_SOP_CLASSES,
        )
    ]


def _enhanced_frame(ds: Dataset, path: Path, index: int) -> Frame:
    position = _group(ds, index, "PlanePositionSequence")
    orientation = _group(ds, index, "PlaneOrientationSequence")
    measures = _group(ds, index, "PixelMeasuresSequence")
    transform = _group(ds, index, "PixelValueTransformationSequence")
    content = _group(ds, index, "FrameContentSequence")
    if position is None or orientation is None:
        raise _geometry_missing(path, f"Plane Position / Orientation for frame {index + 1}")
    if measures is None or "PixelSpacing" not in measures:
        raise _geometry_missing(path, f"Pixel Measures for frame {index + 1}")
    return Frame(
        path=path,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        frame_number=index + 1,
        position=np.asarray([float(v) for v in position.ImagePositionPatient]),
        orientation=np.asarray([float(v) for v in orientation.ImageOrientationPatient]),
        pixel_spacing=(float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1])),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        slope=_float_or(transform.get("RescaleSlope") if transform else None, 1.0),
        intercept=_float_or(transform.get("RescaleIntercept") if transform else None, 0.0),
        slice_thickness=_float_or(measures.get("SliceThickness"), 0.0) or None,
        acquisition=str(content.get("StackID", "")) if content is not None else "",
    )
