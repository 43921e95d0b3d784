"""The DICOM outputs of one map of a DICOM case: a Parametric Map and a Secondary Capture series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.uid import ParametricMapStorage, SecondaryCaptureImageStorage

from xaimed import __version__
from xaimed.config import OutputsSection
from xaimed.io.dicom.reader import DicomHeader
from xaimed.volume import Volume
from xaimed.writers.dicom_common import DerivedSeries
from xaimed.writers.dicom_pm import write_parametric_map
from xaimed.writers.dicom_sc import secondary_capture_uids, write_secondary_captures
from xaimed.writers.overlay import OverlayStyle
from xaimed.writers.uids import DerivationKey

PARAMETRIC_MAP_STORAGE = str(ParametricMapStorage)
SECONDARY_CAPTURE_STORAGE = str(SecondaryCaptureImageStorage)


def dicom_source_record(volume: Volume) -> dict[str, Any]:
    """What the sidecar records about a DICOM source: the series used and how it was read."""
    header: DicomHeader = volume.source.header
    series = header.series
    return {
        "study_instance_uid": series.study_uid,
        "series_instance_uid": series.series_uid,
        "series_part": series.part,
        "series_number": series.series_number,
        "modality": series.modality,
        "series_description": series.description,
        "planes": len(header.stack.frames),
        "dimensionality": volume.meta.get("dimensionality", 3),
        "resampled": header.stack.resampled,
    }


def write_dicom_outputs(
    source: Volume,
    heatmap: Volume,
    case_dir: Path,
    stem: str,
    *,
    outputs: OutputsSection,
    method: str,
    params: dict[str, Any],
    target: str,
    model_sha256: str,
    sidecar: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Write the outputs ``outputs`` asks for; returns the manifest's ``series_uid``, ``dicom_pm``
    and ``dicom_sc``.

    ``params`` is everything besides method, target and model that shapes the map (method
    parameters, post-processing, preprocessing): it enters the UIDs, so a rerun of the same
    explanation writes the same UIDs and a changed one writes new series. ``sidecar`` (the map's
    sidecar record, when given) gets ``dicom_outputs``, the paths (relative to the case folder)
    and UIDs of what was written,
    and the pydicom and highdicom versions under ``software``.
    """
    header: DicomHeader = source.source.header
    key = DerivationKey(header.series.label, method, params, target, model_sha256)
    series = DerivedSeries(
        key=key,
        method=method,
        target=target,
        description=(
            f"{method} attribution map for output '{target}' computed by xaimed {__version__} "
            f"(model sha256 {model_sha256[:16]}); research use, not for diagnosis"
        ),
    )
    row: dict[str, str] = {"series_uid": header.series.label}
    written: dict[str, Any] = {}
    if outputs.parametric_map:
        path = write_parametric_map(heatmap, case_dir / f"{stem}_pm.dcm", series)
        row["dicom_pm"] = str(path)
        written["parametric_map"] = {
            # Relative to the sidecar's folder: a moved run folder stays consistent, and a
            # resumed run writes the same sidecar as an uninterrupted one.
            "path": path.name,
            "sop_class_uid": PARAMETRIC_MAP_STORAGE,
            "series_instance_uid": key.series_uid("pm"),
            "series_number": key.series_number("pm"),
            "sop_instance_uid": key.instance_uid("pm"),
            "content_description": series.content_description(),
        }
    if outputs.secondary_capture:
        style = OverlayStyle(**outputs.overlay.model_dump())
        folder = write_secondary_captures(source, heatmap, case_dir / f"{stem}_sc", series, style)
        row["dicom_sc"] = str(folder)
        uids = secondary_capture_uids(heatmap, series)
        written["secondary_capture"] = {
            "path": folder.name,
            "sop_class_uid": SECONDARY_CAPTURE_STORAGE,
            "series_instance_uid": key.series_uid("sc"),
            "series_number": key.series_number("sc"),
            # Files IM0001.dcm ... in this order: one per source plane, in source order.
            "sop_instance_uids": uids,
        }
    if sidecar is not None:
        sidecar["dicom_outputs"] = written
        # A new dict: the caller's software record may be shared between maps.
        sidecar["software"] = {**sidecar.get("software", {}), **dicom_software()}
    return row


def dicom_software() -> dict[str, str]:
    """Versions of the libraries that wrote the DICOM objects."""
    import highdicom
    import pydicom

    return {"pydicom": pydicom.__version__, "highdicom": highdicom.__version__}
