"""Write a Volume as a classic single-frame DICOM series (for sample data and tests).

Not an output of ``xaimed explain``: it turns NIfTI test volumes into DICOM inputs with known
geometry, so that reading them back can be checked against the NIfTI. UIDs are derived from the
given ``uid_seed``, so the same call always writes the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from xaimed.geometry import ras_to_lps
from xaimed.volume import Volume
from xaimed.writers.dicom_common import ds_values
from xaimed.writers.uids import derived_uid

SOP_CLASSES = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}


def export_series(
    volume: Volume,
    folder: Path,
    *,
    uid_seed: str,
    patient_id: str,
    patient_name: str = "",
    modality: str = "MR",
    series_description: str = "",
    series_number: int = 1,
    rescale: tuple[float, float] = (1.0, 0.0),
    compress_rle: bool = False,
    file_names: str = "IM{:04d}",
) -> list[Path]:
    """Write one file per slice of ``volume`` (3D) into ``folder``; returns the paths.

    Voxel values are stored as int16 after inverting ``rescale`` (slope, intercept), which the
    headers then declare. ``file_names`` formats the slice index (extension-less by default,
    like many PACS exports).
    """
    affine = ras_to_lps(volume.affine)
    spacing = volume.geometry.spacing
    row_dir, col_dir = affine[:3, 0] / spacing[0], affine[:3, 1] / spacing[1]
    slope, intercept = rescale
    stored = np.round((np.asarray(volume.array, dtype=np.float64) - intercept) / slope)
    stored = stored.astype(np.int16)
    study_uid = derived_uid(uid_seed, "study")
    series_uid = derived_uid(uid_seed, "series", str(series_number))
    frame_of_reference = derived_uid(uid_seed, "frame-of-reference")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(stored.shape[2]):
        position = affine[:3, 3] + k * affine[:3, 2]
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = SOP_CLASSES[modality]
        ds.SOPInstanceUID = derived_uid(uid_seed, "instance", str(series_number), str(k))
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName, ds.PatientID = patient_name, patient_id
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, series_number, k + 1
        ds.SeriesDescription = series_description
        ds.Laterality, ds.PatientPosition, ds.AcquisitionNumber = "", "HFS", 1
        ds.Manufacturer = "xaimed sample export"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_of_reference, ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = ds_values(position)
        ds.ImageOrientationPatient = ds_values([*row_dir, *col_dir])
        ds.PixelSpacing = ds_values([spacing[1], spacing[0]])
        ds.SliceThickness = ds_values([spacing[2]])[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = ds_values([slope, intercept])
        if modality == "CT":
            ds.RescaleType = "HU"
            ds.KVP = ""
        else:
            ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "RM", "NONE", "3D"
            ds.ScanOptions, ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "", "", "", ""
        # (i, j) -> (rows = j, columns = i)
        pixels = np.ascontiguousarray(stored[:, :, k].T)
        ds.PixelData = pixels.tobytes()
        if compress_rle:
            # Keep the derived SOP Instance UID: compress() would replace it with a random one.
            ds.compress(RLELossless, pixels, encoding_plugin="pydicom", generate_instance_uid=False)
        path = folder / file_names.format(k + 1)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
