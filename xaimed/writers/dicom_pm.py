"""Write a map as a DICOM Parametric Map (float32, the source's per-frame geometry).

Built with highdicom's ``ParametricMap``: patient and study come from the source images, one frame
per source plane with its position, a Real World Value Mapping (unitless, UCUM "1"), references
to every source image. highdicom does not write a Frame Anatomy Sequence, which dcmqi (what
3D Slicer uses) needs to read the object, so it is added here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from xaimed import __version__
from xaimed.errors import OutputError
from xaimed.io.dicom.frames import Frame
from xaimed.io.dicom.reader import DicomHeader, map_on_source_planes
from xaimed.volume import Volume
from xaimed.writers.atomic import atomic_path
from xaimed.writers.dicom_common import (
    DerivedSeries,
    complete_identity,
    ds_values,
    fit_lo,
    mark_equipment,
    quiet_highdicom,
)

# SNOMED CT codes for the Frame Anatomy Sequence when the source has none of its own.
_HEAD = ("69536005", "SCT", "Head")
_BODY = ("38266002", "SCT", "Entire body")


def _frame_anatomy(source: Dataset) -> Sequence:
    shared = source.get("SharedFunctionalGroupsSequence")
    if shared and "FrameAnatomySequence" in shared[0]:
        return shared[0].FrameAnatomySequence
    part = str(source.get("BodyPartExamined", "")).upper()
    value, scheme, meaning = _HEAD if part in ("HEAD", "BRAIN", "SKULL") else _BODY
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = value, scheme, meaning
    item = Dataset()
    item.AnatomicRegionSequence = Sequence([region])
    item.FrameLaterality = "U"
    return Sequence([item])


def _complete_measures(ds: Dataset, thickness: float) -> None:
    """Give ``ds`` the geometry highdicom reads from a source even when it is passed explicitly.

    highdicom expects pixel measures at the top level of a classic image, and measures and
    orientation in the shared functional groups of a multi-frame one; enhanced files often keep
    them per frame only.
    """
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None and "SharedFunctionalGroupsSequence" not in ds:
        if "SliceThickness" not in ds:
            ds.SliceThickness = thickness
        return
    if "SharedFunctionalGroupsSequence" not in ds:
        ds.SharedFunctionalGroupsSequence = Sequence([Dataset()])
    shared = ds.SharedFunctionalGroupsSequence[0]
    # The reader checked that every frame has the same measures and orientation.
    for keyword in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
        if keyword not in shared and per_frame and keyword in per_frame[0]:
            setattr(shared, keyword, per_frame[0][keyword].value)


def _geometry(frames: list[Frame], step: float | None) -> dict[str, Any]:
    """highdicom's geometry arguments: Pixel Measures, Plane Orientation, Plane Positions."""
    first = frames[0]
    return {
        "pixel_measures": hd.PixelMeasuresSequence(
            pixel_spacing=first.pixel_spacing,
            slice_thickness=first.slice_thickness or step or 1.0,
            spacing_between_slices=step,
        ),
        "plane_orientation": hd.PlaneOrientationSequence(
            coordinate_system="PATIENT", image_orientation=first.orientation.tolist()
        ),
        "plane_positions": [
            hd.PlanePositionSequence(
                coordinate_system="PATIENT", image_position=f.position.tolist()
            )
            for f in frames
        ],
    }


def _place_planar_source(ds: Dataset, frame: Frame) -> None:
    """Give the header copy of a 2D image without Image Plane attributes the plane xaimed read
    it on, so that highdicom builds the Parametric Map in a patient coordinate system.

    The Parametric Map IOD requires a Frame of Reference and per-frame Plane Position and
    Orientation (dciodvfy reports their absence as errors), and highdicom only writes them for
    a source that has Image Position (Patient): for a source without one it writes a map that
    neither the standard nor highdicom itself accepts. A radiograph has no place in the patient,
    so the map gets the plane of xaimed's Volume (and of its NIfTI output): the first pixel at
    the origin, directions from Patient Orientation (or DICOM's identity), the spacing read, in
    a Frame of Reference of its own (derived from the source UIDs by complete_identity, shared
    with no acquired image, so no viewer registers it to one). The Derivation Image Sequence
    still ties the one frame pixel for pixel to the source image. Only the copy changes.
    """
    ds.ImagePositionPatient = ds_values(frame.position)
    ds.ImageOrientationPatient = ds_values(frame.orientation)
    if "PixelSpacing" not in ds:
        ds.PixelSpacing = ds_values(frame.pixel_spacing)
    ds.PositionReferenceIndicator = ds.get("PositionReferenceIndicator", "")


def build_parametric_map(heatmap: Volume, series: DerivedSeries) -> Dataset:
    """The Parametric Map dataset of ``heatmap`` (a map on a DICOM source's grid)."""
    header: DicomHeader = heatmap.source.header
    frames = header.stack.frames
    planes = map_on_source_planes(heatmap)
    lo, hi = float(planes.min()), float(planes.max())
    first = frames[0]
    step = header.stack.geometry.spacing[2] if len(frames) > 1 else None
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=series.method[:16],
        lut_explanation=fit_lo(f"{series.method} attribution"),
        unit=codes.UCUM.NoUnits,
        value_range=(lo, hi) if hi > lo else (lo, lo + 1.0),
        slope=1.0,
        intercept=0.0,
    )
    width = max(hi - lo, 1e-12)
    sources = [complete_identity(ds) for ds in header.datasets]
    for ds in sources:
        if not first.in_patient:
            _place_planar_source(ds, first)
        _complete_measures(ds, first.slice_thickness or step or 1.0)
    pm = hd.pm.ParametricMap(
        **_geometry(frames, step),
        source_images=sources,
        pixel_array=planes,
        series_instance_uid=series.key.series_uid("pm"),
        series_number=series.key.series_number("pm"),
        sop_instance_uid=series.key.instance_uid("pm"),
        instance_number=1,
        manufacturer="xaimed",
        manufacturer_model_name="xaimed",
        software_versions=__version__,
        device_serial_number="0",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[
            # LINEAR_EXACT: attribution ranges are often narrower than 1, which plain LINEAR
            # windows do not allow.
            hd.VOILUTTransformation(
                window_center=(lo + hi) / 2,
                window_width=width,
                voi_lut_function="LINEAR_EXACT",
            )
        ],
        transfer_syntax_uid=ExplicitVRLittleEndian,
        content_description=series.content_description(),
        content_label="ATTRIBUTION",
    )
    mark_equipment(pm, sources[0])
    # highdicom draws a random Dimension Organization UID; one derived from the series keeps
    # rewritten files byte-identical, like every other UID we write.
    organisation = series.key.instance_uid("pm-dimension-organization")
    for item in pm.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = organisation
    for item in pm.get("DimensionIndexSequence", []):
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = organisation
    pm.SeriesDescription = series.series_description("map")
    pm.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = _frame_anatomy(header.datasets[0])
    return pm


def write_parametric_map(heatmap: Volume, path: Path, series: DerivedSeries) -> Path:
    """Write the Parametric Map of ``heatmap`` to ``path`` (atomically)."""
    try:
        with quiet_highdicom():
            pm = build_parametric_map(heatmap, series)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise OutputError(
            f"{path.name}: the Parametric Map cannot be built ({type(exc).__name__}: {exc}); "
            "set outputs.parametric_map: false to skip it."
        ) from None
    with atomic_path(path) as tmp:
        pm.save_as(tmp, enforce_file_format=True)
    return path
