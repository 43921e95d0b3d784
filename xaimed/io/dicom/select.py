"""Choose the series of a study to explain, as the config's ``dicom.select`` says, and read it."""

from __future__ import annotations

import logging
import re

from xaimed.config import DicomSection, DicomSelect
from xaimed.errors import InputError
from xaimed.io.dicom.discovery import DicomSeries, DicomStudy
from xaimed.io.dicom.reader import read_dicom_series
from xaimed.io.safety import check_declared_size
from xaimed.volume import Volume

log = logging.getLogger("xaimed")


def _describe(series: DicomSeries) -> str:
    """Series number, modality and size: never the free-text Series Description, which may
    hold names and would spread them into logs and manifests (it stays in the sidecar)."""
    number = "" if series.series_number is None else f"#{series.series_number} "
    return f"{number}{series.modality} ({len(series.frames)} planes)"


def choose_series(study: DicomStudy, select: DicomSelect, *, case_id: str) -> DicomSeries:
    """The largest 3D series of ``study`` matching ``select`` (a 2D one only if none is 3D).

    Ties go to the lowest Series Number, then the series UID, so the choice is deterministic.
    Raises InputError listing the study's series when none matches, and with the reason when
    no series of the study could be read at all.
    """
    if not study.series and study.unreadable:
        _, reason = study.unreadable[0]
        raise InputError(f"case {case_id}: no image series of the study can be read: {reason}")
    matches = [
        s
        for s in study.series
        if (select.modality is None or s.modality.upper() == select.modality.upper())
        and (
            select.description is None
            or re.search(select.description, s.description, flags=re.IGNORECASE)
        )
    ]
    if not matches:
        available = "; ".join(_describe(s) for s in study.series)
        raise InputError(
            f"case {case_id}: no series matches dicom.select (modality={select.modality}, "
            f"description={select.description}); the study has: {available} (descriptions "
            "are left out of messages: they may hold names); change dicom.select."
        )
    chosen = max(
        matches,
        key=lambda s: (
            len(s.frames) > 1,
            s.voxels,
            -(s.series_number if s.series_number is not None else 1 << 30),
            s.label,
        ),
    )
    log.info("case %s: explaining series %s", case_id, _describe(chosen))
    return chosen


def read_study(
    study: DicomStudy, options: DicomSection, *, case_id: str, memory_budget: int | None = None
) -> Volume:
    """Read the series of ``study`` chosen by ``options.select`` into a Volume.

    The size its headers declare (rows x columns x planes) is checked against ``memory_budget``
    (bytes; default: the memory available now) before any pixel data are decoded.
    """
    series = choose_series(study, options.select, case_id=case_id)
    first = series.frames[0]
    check_declared_size(
        (first.rows, first.columns, len(series.frames)),
        f"case {case_id}, series {series.label}",
        memory_budget,
    )
    return read_dicom_series(
        series,
        min_slices=options.min_slices,
        resample_irregular=options.resample_irregular,
        voi_lut=options.voi_lut,
        where=f"case {case_id}, series {series.label}",
    )
