"""Write a map as a series of RGB Secondary Captures, one per source plane.

Each instance is the windowed source plane with the map blended over it: it opens in every
viewer and PACS. highdicom's ``SCImage.from_ref_dataset`` copies patient and study from the
source; the attributes it does not set (image-plane geometry, standardised in SC since 2024 and
what lets SimpleITK read the series back with the source geometry; Source Image Sequence;
derivation) and the two it sets differently from what we need (Conversion Type WSD, not DI; a
derived Image Type) are set here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from xaimed.errors import OutputError
from xaimed.io.dicom.frames import Frame
from xaimed.io.dicom.planar import FROM_PATIENT_ORIENTATION, NO_SPACING
from xaimed.io.dicom.reader import DicomHeader, map_on_source_planes
from xaimed.volume import Volume
from xaimed.writers.dicom_common import (
    DerivedSeries,
    atomic_folder,
    complete_identity,
    ds_values,
    mark_equipment,
    quiet_highdicom,
)
from xaimed.writers.overlay import OverlayStyle, blend, window_limits


def _source_reference(frame: Frame) -> Sequence:
    item = Dataset()
    item.ReferencedSOPClassUID = frame.sop_class_uid
    item.ReferencedSOPInstanceUID = frame.sop_instance_uid
    if frame.frame_number is not None:
        item.ReferencedFrameNumber = frame.frame_number
    return Sequence([item])


def _patient_orientation(direction: np.ndarray) -> str:
    """The Patient Orientation letter closest to an LPS direction cosine."""
    axis = int(np.argmax(np.abs(direction)))
    return ("LR", "PA", "HF")[axis][0 if direction[axis] > 0 else 1]


def secondary_capture_uids(heatmap: Volume, series: DerivedSeries) -> list[str]:
    """SOP Instance UIDs of the Secondary Captures, one per source plane in source order."""
    frames = heatmap.source.header.stack.frames
    return [
        series.key.instance_uid("sc", frame.sop_instance_uid, str(frame.frame_number or 0))
        for frame in frames
    ]


def build_secondary_captures(
    source: Volume, heatmap: Volume, series: DerivedSeries, style: OverlayStyle
) -> list[Dataset]:
    """One RGB Secondary Capture per source plane of ``heatmap`` blended over ``source``."""
    header: DicomHeader = heatmap.source.header
    frames = header.stack.frames
    values = map_on_source_planes(heatmap)
    image = source.array if source.array.ndim == 3 else source.array.mean(axis=3)
    images = map_on_source_planes(source.with_array(np.asarray(image, dtype=np.float32)))
    window = window_limits(images)
    magnitude = float(np.abs(values).max()) if values.size else 0.0
    signed = bool(values.min() < 0)
    step = header.stack.geometry.spacing[2]
    # A 2D image read with dicom.voi_lut "display" was not windowed: its VOI window is the grey
    # window, as in a viewer.
    presentation = source.meta.get("presentation") or {}
    if presentation.get("display_window"):
        window = tuple(presentation["display_window"])
    # highdicom builds the first instance (patient, study, equipment, SC modules); the others
    # differ only per slice, so they are copies of it with those attributes replaced: building
    # each with highdicom costs a module lookup per attribute, seconds per series.
    template: Dataset | None = None
    out = []
    uids = secondary_capture_uids(heatmap, series)
    for index, frame in enumerate(frames):
        ref = complete_identity(
            header.series.headers[frame.sop_instance_uid], frame_of_reference=frame.in_patient
        )
        pixels = blend(
            images[index],
            values[index],
            window=window,
            magnitude=magnitude,
            signed=signed,
            style=style,
        )
        uid = uids[index]
        if template is None:
            template = _first_instance(ref, pixels, frame, series, uid, step)
            sc = template
        else:
            sc = copy.deepcopy(template)
            sc.PixelData = pixels.tobytes()
        sc.SOPInstanceUID = uid
        sc.file_meta.MediaStorageSOPInstanceUID = uid
        sc.InstanceNumber = index + 1
        sc.SourceImageSequence = _source_reference(frame)
        if frame.in_patient:
            sc.ImagePositionPatient = ds_values(frame.position)
            sc.SliceThickness = ds_values([frame.slice_thickness or step])[0]
        out.append(sc)
    return out


def _first_instance(
    ref: Dataset,
    pixels: np.ndarray,
    frame: Frame,
    series: DerivedSeries,
    uid: str,
    step: float,
) -> Dataset:
    if not frame.in_patient:
        return _planar_instance(ref, pixels, frame, series, uid)
    sc = _from_ref(ref, pixels, frame, series, uid)
    _derived(sc, ref, series)
    # Image-plane geometry (same orientation and spacing for every slice of the stack).
    sc.ImageOrientationPatient = ds_values(frame.orientation)
    sc.PixelSpacing = ds_values(frame.pixel_spacing)
    sc.Laterality = ref.get("Laterality", "")
    sc.FrameOfReferenceUID = ref.FrameOfReferenceUID
    sc.PositionReferenceIndicator = ref.get("PositionReferenceIndicator", "")
    return sc


def _planar_instance(
    ref: Dataset, pixels: np.ndarray, frame: Frame, series: DerivedSeries, uid: str
) -> Dataset:
    """The Secondary Capture of a 2D image without a place in the patient (a radiograph).

    No Frame of Reference, Image Position or Orientation: the source has none and inventing them
    would place the overlay in the patient. Like the source, it says how it is displayed by
    Patient Orientation (the source's when it has a usable one, else empty: unknown), and its
    Pixel Spacing is the spacing xaimed read (Pixel Spacing, or Imager Pixel Spacing over the
    magnification factor; the sidecar records which) so that measurements on the overlay
    match the source; none when the source has none.
    """
    # highdicom knows no SC without a coordinate system; "PATIENT" only asks for Patient
    # Orientation, which is replaced below by the source's (or emptied when it had none).
    sc = _from_ref(ref, pixels, frame, series, uid)
    _derived(sc, ref, series)
    if frame.geometry == FROM_PATIENT_ORIENTATION:
        # The overlay's pixels are the source's rows and columns: its orientation is the
        # source's, letter for letter (an oblique "FP" is more than one letter per axis).
        sc.PatientOrientation = ref.PatientOrientation
    else:
        sc.PatientOrientation = ""  # Type 2: unknown, as in the source
    if frame.spacing_source == NO_SPACING:
        # The source gives no pixel size; the 1 mm xaimed read it with is not a calibration,
        # and a viewer would measure the overlay in mm with it (Pixel Spacing is optional here).
        del sc.PixelSpacing
    else:
        sc.PixelSpacing = ds_values(frame.pixel_spacing)
    # Type 2C: dciodvfy asks for it even for a chest; empty (unknown) when the source is silent.
    sc.Laterality = ref.get("Laterality", "")
    return sc


def _from_ref(
    ref: Dataset, pixels: np.ndarray, frame: Frame, series: DerivedSeries, uid: str
) -> Dataset:
    """The first overlay instance as highdicom builds it from the source (patient, study,
    equipment and SC modules), Patient Orientation from the frame's directions."""
    return hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series.key.series_uid("sc"),
        series_number=series.key.series_number("sc"),
        sop_instance_uid=uid,
        instance_number=1,
        manufacturer="xaimed",
        pixel_spacing=frame.pixel_spacing,
        patient_orientation=(
            _patient_orientation(frame.orientation[:3]),
            _patient_orientation(frame.orientation[3:]),
        ),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )


def _derived(sc: Dataset, ref: Dataset, series: DerivedSeries) -> None:
    """What every overlay instance says about itself: xaimed, derived, research use."""
    mark_equipment(sc, ref)
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ConversionType = "WSD"
    sc.BurnedInAnnotation = "NO"
    sc.SeriesDescription = series.series_description("overlay")
    sc.DerivationDescription = series.description[:1024]


def write_secondary_captures(
    source: Volume, heatmap: Volume, folder: Path, series: DerivedSeries, style: OverlayStyle
) -> Path:
    """Write the Secondary Capture series into ``folder`` (replaced atomically as a whole)."""
    try:
        with quiet_highdicom():
            datasets = build_secondary_captures(source, heatmap, series, style)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise OutputError(
            f"{folder.name}: the Secondary Captures cannot be built ({type(exc).__name__}: "
            f"{exc}); set outputs.secondary_capture: false to skip them."
        ) from None
    with atomic_folder(folder) as tmp:
        for index, ds in enumerate(datasets, start=1):
            # Names from the instance number only: never from patient data.
            ds.save_as(tmp / f"IM{index:04d}.dcm", enforce_file_format=True)
    return folder
