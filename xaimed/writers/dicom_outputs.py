"""The DICOM outputs of a map of a DICOM case: a Parametric Map and a Secondary Capture series,
and what the sidecar records of the DICOM source."""

from __future__ import annotations

from typing import Any

from pydicom.uid import ParametricMapStorage, SecondaryCaptureImageStorage

from xaimed import __version__
from xaimed.io.dicom.reader import DicomHeader
from xaimed.volume import Volume
from xaimed.writers.base import MapOutput
from xaimed.writers.dicom_common import DerivedSeries
from xaimed.writers.dicom_pm import write_parametric_map
from xaimed.writers.dicom_sc import secondary_capture_uids, write_secondary_captures
from xaimed.writers.overlay import OverlayStyle
from xaimed.writers.uids import DerivationKey

PARAMETRIC_MAP_STORAGE = str(ParametricMapStorage)
SECONDARY_CAPTURE_STORAGE = str(SecondaryCaptureImageStorage)

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
        "spatial_dims": volume.meta.get("spatial_dims", 3),
        "resampled": header.stack.resampled,
        "pixel_spacing": volume.meta.get("pixel_spacing"),
        "pixel_spacing_source": volume.meta.get("pixel_spacing_source"),
        "geometry_source": volume.meta.get("geometry_source"),
        # For a single-frame 2D image: Modality / VOI LUT and MONOCHROME1 inversion as applied.
        "presentation": volume.meta.get("presentation"),
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
        target=out.target,
        description=(
            f"{out.method} attribution map for output '{out.target}' computed by xaimed "
            f"{__version__} (model sha256 {out.model_sha256[:16]}); research use, not for "
            "diagnosis"
        ),
    )


def _record(out: MapOutput, kind: str, written: dict[str, Any]) -> None:
    """Add what a DICOM writer wrote to the map's sidecar (written after every other output):
    ``dicom_outputs.<kind>`` and the versions of the libraries that wrote it."""
    out.sidecar.setdefault("dicom_outputs", {})[kind] = written
    # A new dict: the software record may be shared between maps.
    out.sidecar["software"] = {**out.sidecar.get("software", {}), **dicom_software()}


class ParametricMapWriter:
    """A DICOM Parametric Map of a DICOM source (``outputs.parametric_map``)."""

    name = "dicom_pm"
    columns = ("dicom_pm",)

    def wanted(self, out: MapOutput) -> bool:
        """For a DICOM source when ``outputs.parametric_map`` is on."""
        return is_dicom(out.source) and out.outputs.parametric_map

    def write(self, out: MapOutput) -> dict[str, str]:
        """``<stem>_pm.dcm``; its path (relative to the sidecar's folder) and UIDs go into the
        sidecar."""
        series = derived_series(out)
        path = write_parametric_map(out.heatmap, out.case_dir / f"{out.stem}_pm.dcm", series)
        key = series.key
        _record(out, "parametric_map", {
            # Relative: a moved run folder stays consistent, and a resumed run writes the same
            # sidecar as an uninterrupted one.
            "path": path.name,
            "sop_class_uid": PARAMETRIC_MAP_STORAGE,
            "series_instance_uid": key.series_uid("pm"),
            "series_number": key.series_number("pm"),
            "sop_instance_uid": key.instance_uid("pm"),
            "content_description": series.content_description(),
        })  # fmt: skip
        return {"dicom_pm": str(path)}


class SecondaryCaptureWriter:
    """Overlay Secondary Captures, one per source plane (``outputs.secondary_capture``)."""

    name = "dicom_sc"
    columns = ("dicom_sc",)

    def wanted(self, out: MapOutput) -> bool:
        """For a DICOM source when ``outputs.secondary_capture`` is on."""
        return is_dicom(out.source) and out.outputs.secondary_capture

    def write(self, out: MapOutput) -> dict[str, str]:
        """The folder ``<stem>_sc/``; its UIDs go into the sidecar."""
        series = derived_series(out)
        style = OverlayStyle(**out.outputs.overlay.model_dump())
        folder = write_secondary_captures(out.source, out.heatmap, out.case_dir / f"{out.stem}_sc",
                                          series, style)  # fmt: skip
        key = series.key
        _record(out, "secondary_capture", {
            "path": folder.name,
            "sop_class_uid": SECONDARY_CAPTURE_STORAGE,
            "series_instance_uid": key.series_uid("sc"),
            "series_number": key.series_number("sc"),
            # Files IM0001.dcm ... in this order: one per source plane, in source order.
            "sop_instance_uids": secondary_capture_uids(out.heatmap, series),
        })  # fmt: skip
        return {"dicom_sc": str(folder)}


def dicom_software() -> dict[str, str]:
    """Versions of the libraries that wrote the DICOM objects."""
    import highdicom
    import pydicom

    return {"pydicom": pydicom.__version__, "highdicom": highdicom.__version__}
