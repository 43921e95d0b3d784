"""DICOM input: study discovery, series selection, series -> Volume with geometry checks."""

from xaimed.io.dicom.discovery import DicomSeries, DicomStudy, scan_dicom
from xaimed.io.dicom.reader import DicomHeader, map_on_source_planes, read_dicom_series

__all__ = [
    "DicomHeader",
    "DicomSeries",
    "DicomStudy",
    "map_on_source_planes",
    "read_dicom_series",
    "scan_dicom",
]
