"""Map volumes in the format ``outputs.format`` asks for: NIfTI, NRRD or MetaImage.

Every volume a run writes next to its maps (the map, the ensemble's member standard deviation,
the dominant-class label map) goes through :func:`write_map_volume` or
:func:`write_label_volume`, so that all of them follow ``outputs.format`` and keep the source's
grid. ``same`` is the input's format: NRRD for NRRD, MetaImage for MetaImage, NIfTI otherwise
(DICOM inputs get their DICOM outputs besides).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xaimed.config import OutputsSection
from xaimed.volume import Volume
from xaimed.writers.base import MapOutput
from xaimed.writers.itk import write_itk
from xaimed.writers.nifti import write_label_map, write_nifti_map

# The output format of ``outputs.format: same`` for each Source.format.
SAME_FORMAT = {"nrrd": "nrrd", "metaimage": "mha"}

_NOTE = "xaimed attribution map; research use"


def map_format(outputs: OutputsSection, source: Volume) -> str:
    """``nifti``, ``nrrd`` or ``mha``: the file format of ``source``'s map volumes."""
    if outputs.format == "same":
        return SAME_FORMAT.get(source.source.format, "nifti")
    return outputs.format


def map_suffix(fmt: str, compress: bool) -> str:
    """The file suffix of a map volume in format ``fmt`` (NRRD and MetaImage compress inside)."""
    if fmt == "nifti":
        return ".nii.gz" if compress else ".nii"
    return f".{fmt}"


def write_map_volume(
    volume: Volume, case_dir: Path, stem: str, outputs: OutputsSection, *, method: str
) -> Path:
    """Write the float32 map ``volume`` as ``case_dir/<stem><suffix>``; returns the path."""
    fmt = map_format(outputs, volume)
    path = case_dir / f"{stem}{map_suffix(fmt, outputs.compress)}"
    if fmt == "nifti":
        return write_nifti_map(volume, path, method=method)
    meta = {"xaimed_method": method, "description": _NOTE}
    return write_itk(volume, path, dtype=np.float32, compress=outputs.compress, meta=meta)


def write_label_volume(
    volume: Volume, case_dir: Path, stem: str, outputs: OutputsSection, *, labels: dict[int, str]
) -> Path:
    """Write the integer label map ``volume`` (voxel value = key of ``labels``) like a map."""
    fmt = map_format(outputs, volume)
    path = case_dir / f"{stem}{map_suffix(fmt, outputs.compress)}"
    if fmt == "nifti":
        return write_label_map(volume, path, labels=labels)
    names = ", ".join(f"{i}={n}" for i, n in sorted(labels.items()))
    meta = {"description": f"xaimed dominant class: {names}"}
    return write_itk(volume, path, dtype=np.int16, compress=outputs.compress, meta=meta)


class MapVolumeWriter:
    """The map as a float32 volume on the source grid (``outputs.nifti``), in the format
    ``outputs.format``; its path goes to the manifest's ``nifti`` column whatever the format."""

    name = "nifti"
    columns = ("nifti",)

    def wanted(self, out: MapOutput) -> bool:
        """When ``outputs.nifti`` is on."""
        return out.outputs.nifti

    def write(self, out: MapOutput) -> dict[str, str]:
        """``<stem>.nii.gz`` (``.nii`` when ``outputs.compress`` is off), ``.nrrd`` or ``.mha``."""
        path = write_map_volume(out.heatmap, out.case_dir, out.stem, out.outputs, method=out.method)
        return {"nifti": str(path)}
