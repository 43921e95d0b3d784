"""The DICOM outputs of one map of a DICOM case: a Parametric Map and a Secondary Capture series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xaimed import __version__
from xaimed.config import OutputsSection
from xaimed.io.dicom.reader import DicomHeader
from xaimed.volume import Volume
from xaimed.writers.dicom_common import DerivedSeries
from xaimed.writers.dicom_pm import write_parametric_map
from xaimed.writers.dicom_sc import write_secondary_captures
from xaimed.writers.overlay import OverlayStyle
from xaimed.writers.uids import DerivationKey


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
) -> dict[str, str]:
    """Write the outputs ``outputs`` asks for; returns the manifest's ``series_uid``, ``dicom_pm``
    and ``dicom_sc``.

    ``params`` is everything besides method, target and model that shapes the map (method
    parameters, post-processing, preprocessing): it enters the UIDs, so a rerun of the same
    explanation writes the same UIDs and a changed one writes new series.
    """
    header: DicomHeader = source.source.header
    key = DerivationKey(header.series.label, method, params, target, model_sha256)
    series = DerivedSeries(
        key=key,
        method=method,
        description=(
            f"{method} attribution map for output '{target}' computed by xaimed {__version__} "
            f"(model sha256 {model_sha256[:16]}); research use, not for diagnosis"
        ),
    )
    row: dict[str, str] = {"series_uid": header.series.label}
    if outputs.parametric_map:
        path = write_parametric_map(heatmap, case_dir / f"{stem}_pm.dcm", series)
        row["dicom_pm"] = str(path)
    if outputs.secondary_capture:
        style = OverlayStyle(**outputs.overlay.model_dump())
        folder = write_secondary_captures(source, heatmap, case_dir / f"{stem}_sc", series, style)
        row["dicom_sc"] = str(folder)
    return row
