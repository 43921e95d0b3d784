"""Write a 2D array as a synthetic radiograph: a CR or DX DICOM file (sample data and tests).

Not an output of ``xaimed explain``: it turns a 2D image (twod's phantom, a test pattern) into a
radiograph as a modality writes it, so that reading it back exercises what real CR / DX files do:

The array is in xaimed's axis order, (X, Y): axis 0 runs along a row (the column index).

- ``CR``: Computed Radiography Image Storage, MONOCHROME1 (low stored values are white), a
  Modality rescale (``rescale``), a VOI LUT window, Pixel Spacing *and* a different Imager Pixel
  Spacing (so a test can tell which one the reader used), Patient Orientation ``L\\F`` (a PA view).
- ``DX``: Digital X-Ray Image Storage - For Presentation, MONOCHROME2, identity rescale, a VOI LUT
  window, Imager Pixel Spacing only (with an Estimated Radiographic Magnification Factor when
  ``magnification`` is given), no Pixel Spacing.

Neither carries Image Position / Orientation (Patient) or a Frame of Reference unless ``affine``
is given (some DX modalities do write them). The input's brightest value is stored as the
brightest pixel: the array is mapped linearly onto the 12-bit stored range (inverted for
MONOCHROME1), or stored as it is (``scale=False``). UIDs come from ``uid_seed``, so the same
call writes the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from xaimed.geometry import ras_to_lps
from xaimed.writers.dicom_common import ds_values
from xaimed.writers.uids import derived_uid

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # For Presentation
BITS_STORED = 12
STORED_MAX = 2**BITS_STORED - 1


def stored_values(
    image: np.ndarray, kind: Literal["CR", "DX"], *, scale: bool = True
) -> np.ndarray:
    """The stored pixels (rows, columns) for ``image`` in xaimed's axis order (X, Y[, 1]).

    With ``scale``, linear onto 0 .. 4095 (a constant image is mid-grey); without, ``image``
    must already hold values in 0 .. 4095 (e.g. twod's radiograph phantom), which are kept.
    Either way the brightest input is the brightest pixel: 4095 for MONOCHROME2, 0 for
    MONOCHROME1 (which stores ``4095 - value``).
    """
    data = np.asarray(image, dtype=np.float64)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim != 2:
        raise ValueError(f"a radiograph is a 2D array (X, Y) or (X, Y, 1), got {data.shape}")
    if scale:
        lo, hi = float(data.min()), float(data.max())
        scaled = (data - lo) / (hi - lo) if hi > lo else np.full(data.shape, 0.5)
        stored = np.round(scaled * STORED_MAX)
    else:
        stored = np.round(data)
        if stored.min() < 0 or stored.max() > STORED_MAX:
            raise ValueError(
                f"values {stored.min():g} .. {stored.max():g} do not fit 12 bits (0 .. 4095); "
                "pass scale=True"
            )
    if kind == "CR":
        stored = STORED_MAX - stored
    # (X, Y) -> (rows = Y, columns = X): axis 0 runs along a row.
    return np.ascontiguousarray(stored.T.astype(np.uint16))


def write_radiograph(
    image: np.ndarray,
    path: Path,
    *,
    kind: Literal["CR", "DX"],
    uid_seed: str,
    patient_id: str = "RADIOGRAPH-1",
    patient_name: str = "",
    pixel_spacing: tuple[float, float] = (0.2, 0.2),
    imager_pixel_spacing: tuple[float, float] | None = None,
    magnification: float | None = None,
    rescale: tuple[float, float] = (1.0, 0.0),
    window: tuple[float, float] | None = None,
    patient_orientation: tuple[str, str] | None = ("L", "F"),
    affine: np.ndarray | None = None,
    scale: bool = True,
) -> Path:
    """Write ``image`` (X, Y) as one CR or DX file at ``path``; returns ``path``.

    ``pixel_spacing`` is (between rows, between columns) in mm: the CR's Pixel Spacing, and the
    DX's Imager Pixel Spacing (DX writes no Pixel Spacing). ``imager_pixel_spacing`` (CR only)
    defaults to 1.1 x ``pixel_spacing``, a detector plane behind the patient. ``rescale`` is the
    CR's (slope, intercept); DX always has the identity. ``window`` is (center, width) of the
    VOI LUT, in rescaled values; default: the middle 80 % of the rescaled range. ``affine``
    (RAS, voxel -> mm) adds Image Position / Orientation (Patient) and a Frame of Reference.
    ``scale``: see :func:`stored_values`.

    To write values that read back unchanged (a sample radiograph for a model trained on them):
    ``scale=False``, identity ``rescale`` and ``window=(2048, 4096)``, the LINEAR window that maps
    0 .. 4095 onto itself, so the default ``dicom.voi_lut: apply`` changes nothing. A phantom
    drawn as (rows, columns) is passed transposed (``image.T``).
    """
    stored = stored_values(image, kind, scale=scale)
    slope, intercept = rescale if kind == "CR" else (1.0, 0.0)
    if window is None:
        low, high = intercept + 0.1 * STORED_MAX * slope, intercept + 0.9 * STORED_MAX * slope
        window = ((low + high) / 2, high - low)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CR_IMAGE_STORAGE if kind == "CR" else DX_IMAGE_STORAGE
    ds.SOPInstanceUID = derived_uid(uid_seed, "instance")
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
        patient_name, patient_id, "", "O",
    )  # fmt: skip
    ds.StudyInstanceUID = derived_uid(uid_seed, "study")
    ds.SeriesInstanceUID = derived_uid(uid_seed, "series")
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
    ds.SeriesDate, ds.SeriesTime = "20260101", "120500"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = kind, 1, 1
    ds.Manufacturer = "xaimed sample export"
    ds.BodyPartExamined, ds.ViewPosition, ds.Laterality = "CHEST", "PA", ""
    ds.PatientOrientation = list(patient_orientation) if patient_orientation else ""
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if kind == "CR" else "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, BITS_STORED, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = ds_values([slope, intercept])
    ds.RescaleType = "US"  # unspecified: radiograph values have no physical unit
    ds.WindowCenter, ds.WindowWidth = ds_values(window)
    ds.VOILUTFunction = "LINEAR"
    if kind == "CR":
        ds.PixelSpacing = ds_values(pixel_spacing)
        ds.ImagerPixelSpacing = ds_values(imager_pixel_spacing or [1.1 * s for s in pixel_spacing])
    else:
        ds.ImagerPixelSpacing = ds_values(pixel_spacing)
        if magnification is not None:
            ds.EstimatedRadiographicMagnificationFactor = ds_values([magnification])[0]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PresentationLUTShape = "IDENTITY"
        ds.DetectorType, ds.BurnedInAnnotation, ds.LossyImageCompression = "DIRECT", "NO", "00"
    if affine is not None:
        lps = ras_to_lps(affine)
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        row, col = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
        ds.ImagePositionPatient = ds_values(lps[:3, 3])
        ds.ImageOrientationPatient = ds_values([*row, *col])
        ds.FrameOfReferenceUID = derived_uid(uid_seed, "frame-of-reference")
        ds.PositionReferenceIndicator = ""
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
