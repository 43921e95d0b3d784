"""The DICOM outputs of a map of a DICOM case: a Parametric Map and a Secondary Capture series,
and what the sidecar records of the DICOM source."""

from __future__ import annotations

from typing import Any

from xaimed import __version__
from xaimed.io.dicom.reader import DicomHeader
from xaimed.volume import Volume
from xaimed.writers.base import MapOutput
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


def is_dicom(volume: Volume) -> bool:
    """Whether ``volume`` was read from a DICOM series (the DICOM outputs need its headers)."""
    return volume.source.format == "dicom"


def series_uid(volume: Volume) -> str:
    """The manifest's ``series_uid`` of a DICOM source: the series the map explains."""
    header: DicomHeader = volume.source.header
    return header.series.label


def derived_series(out: MapOutput) -> DerivedSeries:
    """Identity and wording of the derived series of ``out``.

    ``out.derivation`` is everything besides method, target and model that shapes the map
    (method parameters, post-processing, preprocessing): it enters the UIDs, so a rerun of the
    same explanation writes the same UIDs and a changed one writes new series.
    """
    header: DicomHeader = out.source.source.header
    key = DerivationKey(header.series.label, out.method, out.derivation, out.target,
                        out.model_sha256)  # fmt: skip
    return DerivedSeries(
        key=key,
        method=out.method,
        description=(
            f"{out.method} attribution map for output '{out.target}' computed by xaimed "
            f"{__version__} (model sha256 {out.model_sha256[:16]}); research use, not for "
            "diagnosis"
        ),
    )


class ParametricMapWriter:
    """A DICOM Parametric Map of a DICOM source (``outputs.parametric_map``)."""

    name = "dicom_pm"
    columns = ("dicom_pm",)

    def wanted(self, out: MapOutput) -> bool:
        """For a DICOM source when ``outputs.parametric_map`` is on."""
        return is_dicom(out.source) and out.outputs.parametric_map

    def write(self, out: MapOutput) -> dict[str, str]:
        """``<stem>_pm.dcm``."""
        path = write_parametric_map(out.heatmap, out.case_dir / f"{out.stem}_pm.dcm",
                                    derived_series(out))  # fmt: skip
        return {"dicom_pm": str(path)}


class SecondaryCaptureWriter:
    """Overlay Secondary Captures, one per source plane (``outputs.secondary_capture``)."""

    name = "dicom_sc"
    columns = ("dicom_sc",)

    def wanted(self, out: MapOutput) -> bool:
        """For a DICOM source when ``outputs.secondary_capture`` is on."""
        return is_dicom(out.source) and out.outputs.secondary_capture

    def write(self, out: MapOutput) -> dict[str, str]:
        """The folder ``<stem>_sc/``."""
        style = OverlayStyle(**out.outputs.overlay.model_dump())
        folder = write_secondary_captures(out.source, out.heatmap, out.case_dir / f"{out.stem}_sc",
                                          derived_series(out), style)  # fmt: skip
        return {"dicom_sc": str(folder)}
