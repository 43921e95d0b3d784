"""Single-frame 2D images (CR, DX, MG, IO radiographs; secondary captures): plane and values.

Projection radiographs have no place in a patient coordinate system: they usually carry neither
Image Position / Orientation (Patient) nor a Frame of Reference, their pixel size may be given at
the detector (Imager Pixel Spacing) rather than in the patient, and their stored values need
the grayscale pipeline of PS3.3 C.11 (Modality LUT, VOI LUT, and MONOCHROME1's inversion) before
they mean "brighter is higher". This module turns one such header into a plane for
:class:`xaimed.io.dicom.frames.Frame` and one such pixel array into values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut

# Projection radiographs: the VOI LUT option (``dicom.voi_lut``) concerns these.
RADIOGRAPH_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.1.3",  # Digital Intra-Oral X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.3.1",  # Digital Intra-Oral X-Ray Image Storage - For Processing
}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# Classes whose single-frame images are 2D images in their own right, read even without a place
# in the patient. A CT or MR image without Image Position stays refused: it is a broken slice.
PLANAR_SOP_CLASSES = RADIOGRAPH_SOP_CLASSES | {SECONDARY_CAPTURE}

# How a Frame was placed (Frame.geometry, Volume.meta["geometry_source"], the sidecar).
FROM_PATIENT_PLANE = "ImagePositionPatient/ImageOrientationPatient"
FROM_PATIENT_ORIENTATION = "PatientOrientation"
FROM_NOTHING = "identity"  # no orientation in the header: DICOM's identity directions
NO_SPACING = "none (1 mm assumed)"  # Frame.spacing_source of an image without any spacing

# Patient Orientation letters (PS3.3 C.7.6.1.1.1) as LPS+ unit vectors.
_LETTERS = {
    "L": (1.0, 0.0, 0.0), "R": (-1.0, 0.0, 0.0), "P": (0.0, 1.0, 0.0), "A": (0.0, -1.0, 0.0),
    "H": (0.0, 0.0, 1.0), "F": (0.0, 0.0, -1.0),
}  # fmt: skip


def is_planar(ds: Dataset) -> bool:
    """Whether ``ds`` is a single-frame image that may be read as 2D without patient geometry."""
    return str(ds.get("SOPClassUID", "")) in PLANAR_SOP_CLASSES and (
        int(ds.get("NumberOfFrames", 1) or 1) == 1
    )


def pixel_spacing(ds: Dataset) -> tuple[tuple[float, float], str] | None:
    """(between rows, between columns) in mm and the attribute it came from, or None.

    Pixel Spacing (in the patient) first. Without it, Imager Pixel Spacing (at the detector)
    divided by the Estimated Radiographic Magnification Factor where present, which projects it
    back into the patient plane (PS3.3 C.8.11.7); undivided otherwise, as viewers measure it.
    """
    if "PixelSpacing" in ds:
        return (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])), "PixelSpacing"
    if "ImagerPixelSpacing" not in ds:
        return None
    rows, cols = float(ds.ImagerPixelSpacing[0]), float(ds.ImagerPixelSpacing[1])
    factor = ds.get("EstimatedRadiographicMagnificationFactor")
    if factor not in (None, "") and float(factor) > 0:
        source = "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
        return (rows / float(factor), cols / float(factor)), source
    return (rows, cols), "ImagerPixelSpacing"


def _direction(letters: str) -> np.ndarray | None:
    """An LPS unit vector from Patient Orientation letters (e.g. ``L``, ``LF``), or None."""
    if not letters or any(c not in _LETTERS for c in letters):
        return None  # empty, or quadruped letters: no biped direction
    vector = np.sum([_LETTERS[c] for c in letters], axis=0)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else None


def plane_without_position(ds: Dataset) -> tuple[np.ndarray, np.ndarray, str]:
    """Position, orientation cosines (LPS) and their source for an image without Image Plane.

    The directions come from Patient Orientation when it names two perpendicular biped
    directions; otherwise DICOM's identity (rows along +x, columns along +y), which is what
    SimpleITK gives such an image too. The first pixel sits at the origin: without a Frame of
    Reference there is no position to keep.
    """
    value = ds.get("PatientOrientation")
    letters = [str(v).upper() for v in value] if value else []
    if len(letters) == 2:
        row, col = _direction(letters[0]), _direction(letters[1])
        if row is not None and col is not None and abs(float(row @ col)) < 1e-3:
            return np.zeros(3), np.concatenate([row, col]), FROM_PATIENT_ORIENTATION
    return np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), FROM_NOTHING


@dataclass(frozen=True)
class Presentation:
    """What was done to a 2D image's stored values (Volume.meta["presentation"], the sidecar)."""

    photometric_interpretation: str
    modality_lut: str  # "rescale", "ModalityLUTSequence" or "none"
    voi_lut: str  # "applied: window ...", "applied: VOILUTSequence", "none in the header", ...
    inverted: bool
    # The VOI window (low, high) in output values, for display when it was not applied.
    display_window: tuple[float, float] | None

    def sidecar_fields(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return {
            "photometric_interpretation": self.photometric_interpretation,
            "modality_lut": self.modality_lut,
            "voi_lut": self.voi_lut,
            "inverted": self.inverted,
            "display_window": list(self.display_window) if self.display_window else None,
        }


def _stored_range(ds: Dataset) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _lut_range(item: Dataset) -> tuple[float, float]:
    """Output range of a LUT item: 0 .. 2^bits - 1, bits from its LUT Descriptor."""
    return 0.0, 2.0 ** int(item.LUTDescriptor[2]) - 1


def _modality(pixels: np.ndarray, ds: Dataset) -> tuple[np.ndarray, tuple[float, float], str]:
    """Modality LUT applied (pydicom), the range its output can take, and what was applied."""
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    if ds.get("ModalityLUTSequence"):
        return values, _lut_range(ds.ModalityLUTSequence[0]), "ModalityLUTSequence"
    low, high = _stored_range(ds)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    kind = "rescale" if "RescaleSlope" in ds or "RescaleIntercept" in ds else "none"
    return values, (ends[0], ends[1]), kind


def _window(ds: Dataset) -> tuple[float, float] | None:
    """(center, width) of the first VOI window, or None."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = ds.WindowCenter, ds.WindowWidth
    # Several windows (VM > 1) are alternatives; the first is the default one.
    center = center[0] if isinstance(center, MultiValue) else center
    width = width[0] if isinstance(width, MultiValue) else width
    return float(center), float(width)


def voi_problem(ds: Dataset) -> str | None:
    """Why the first VOI LUT of ``ds`` (the one ``dicom.voi_lut: apply`` uses) cannot be
    applied, in words, or None.

    Checked here because pydicom's own errors for these (a struct unpacking error, a bare
    range check) name its internals, not the attribute to fix.
    """
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        descriptor = item.get("LUTDescriptor")
        if descriptor is None or len(descriptor) != 3 or "LUTData" not in item:
            return "has a VOI LUT Sequence without a LUT Descriptor of 3 values or LUT Data"
        entries = int(descriptor[0]) or 65536  # 0 means 2^16 entries (PS3.3 C.11.2.1.1)
        bits = int(descriptor[2])
        if bits != 8 and not 10 <= bits <= 16:
            return f"has a VOI LUT of {bits} bits per entry (DICOM allows 8 or 10 to 16)"
        data = item.LUTData
        # OW data is raw bytes, two per entry; US data is already a list of values.
        held = len(data) // 2 if isinstance(data, bytes) else len(np.atleast_1d(data))
        if held < entries:
            return (
                f"has a VOI LUT whose LUT Descriptor declares {entries} entries but whose LUT "
                f"Data holds {held}"
            )
        return None
    window = _window(ds)
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if window is None:
        return None
    # PS3.3 C.11.2.1.2: LINEAR needs a width of 1 or more; LINEAR_EXACT and SIGMOID only a
    # positive one (0.5 is a valid window of float pixel data).
    if function == "LINEAR" and window[1] < 1:
        return f"has a VOI window of width {window[1]:g} (a LINEAR window needs 1 or more)"
    if function != "LINEAR" and window[1] <= 0:
        return f"has a VOI window of width {window[1]:g} (a {function} window needs more than 0)"
    return None


def presentation_values(
    pixels: np.ndarray, ds: Dataset, *, apply_voi: bool
) -> tuple[np.ndarray, Presentation]:
    """A 2D image's stored ``pixels`` (rows, cols) as float32 values where higher is brighter.

    Modality LUT (Rescale Slope / Intercept or a Modality LUT Sequence), then, when
    ``apply_voi``, the first VOI LUT (a VOI LUT Sequence, else the first window with its VOI LUT
    Function), both through pydicom; then MONOCHROME1 (or a Presentation LUT Shape of INVERSE,
    which DX pairs with MONOCHROME1: one statement, applied once) is inverted within the range
    the values can take: ``low + high - value``, so values keep their range and units.
    """
    values, (low, high), modality = _modality(pixels, ds)
    window = _window(ds)
    has_lut = bool(ds.get("VOILUTSequence"))
    if apply_voi and has_lut:
        # A LUT is indexed by whole values (PS3.3 C.11.2.1.1): round the Modality LUT's
        # output, which pydicom would otherwise truncate towards 0 (with a warning).
        indices = np.rint(values).astype(np.int64)
        values = np.asarray(apply_voi_lut(indices, ds, index=0, prefer_lut=True), np.float64)
        low, high = _lut_range(ds.VOILUTSequence[0])
        voi = "applied: VOILUTSequence"
    elif apply_voi and window is not None:
        # pydicom maps a window onto the modality output range (PS3.3 C.11.2.1.2).
        values = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=False), np.float64)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")
        voi = f"applied: window center {window[0]:g}, width {window[1]:g} ({function})"
    elif has_lut or window is not None:
        voi = "not applied (dicom.voi_lut: display)"
    else:
        voi = "none in the header"
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    inverted = photometric == "MONOCHROME1" or shape == "INVERSE"
    if inverted:
        values = low + high - values
    display = None
    if not voi.startswith("applied") and window is not None and window[1] > 0:
        lo, hi = window[0] - window[1] / 2, window[0] + window[1] / 2
        display = (low + high - hi, low + high - lo) if inverted else (lo, hi)
    return values.astype(np.float32), Presentation(photometric, modality, voi, inverted, display)
