"""What the Parametric Map and Secondary Capture writers share: naming and atomic folders."""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.valuerep import DSfloat

from xaimed import __version__
from xaimed.io.dicom.discovery import XAIMED_MANUFACTURER
from xaimed.writers.atomic import temporary_name
from xaimed.writers.uids import DerivationKey, derived_uid

# highdicom logs every module it copies at INFO and warns about source values it merely copies
# (e.g. single-component person names); both would drown a run's progress lines.
logging.getLogger("highdicom").setLevel(logging.WARNING)

RESEARCH_TAG = "RESEARCH USE, NOT FOR DIAGNOSIS"
# Series Description is an LO: at most 64 characters.
LO_MAX = 64


def fit_lo(text: str, limit: int = LO_MAX) -> str:
    """``text`` shortened to ``limit`` characters at a word boundary, ``...`` marking the cut.

    LO values (descriptions, explanations) hold at most 64 characters; cutting mid-word turns
    "not for diagnosis" into "not for diag". A single word longer than the limit is cut hard.
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    room = limit - 3
    cut = text[: room + 1].rsplit(" ", 1)[0] if " " in text[: room + 1] else text[:room]
    return cut[:room].rstrip(" ,;:(") + "..."


@dataclass(frozen=True)
class DerivedSeries:
    """Identity and wording of one derived series."""

    key: DerivationKey
    method: str  # the method's output id, as in file names and the manifest
    description: str  # one line on how the map was made (Derivation Description)
    target: str = ""  # the explained output's name

    def content_description(self) -> str:
        """Content Description (an LO): method and output, plus the research-use note if it fits.

        Composed to fit rather than cut: the long ``description`` goes to Derivation
        Description (an ST, 1024 characters).
        """
        text = f"{self.method} attribution map"
        if self.target:
            text += f" for output '{self.target}'"
        full = f"{text}; research use only"
        return full if len(full) <= LO_MAX else fit_lo(text)

    def series_description(self, kind: str) -> str:
        """``<method> <kind> - RESEARCH USE, NOT FOR DIAGNOSIS``, the method cut to fit 64 chars."""
        suffix = f" {kind} - {RESEARCH_TAG}"
        return self.method[: LO_MAX - len(suffix)] + suffix


def mark_equipment(ds: Dataset, source: Dataset) -> None:
    """Mark ``ds`` as written by xaimed (discovery skips such objects on a rerun).

    Content and instance-creation date and time are the source series' (falling back to its
    acquisition, then the study's) rather than the time of writing: a rerun, or a run resumed
    after a kill, then writes byte-identical files, and the map sorts with the images it
    explains. When the map was made is in the sidecar (``created``).
    """
    ds.Manufacturer = XAIMED_MANUFACTURER
    ds.ManufacturerModelName = "xaimed"
    ds.SoftwareVersions = __version__
    for prefix in ("Series", "Acquisition", "Study"):
        date = str(source.get(f"{prefix}Date", "") or "")
        if date:
            time = str(source.get(f"{prefix}Time", "") or "") or "000000"
            break
    else:
        date, time = "19000101", "000000"  # the DICOM convention for an unknown date
    ds.ContentDate, ds.ContentTime = date, time
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    if "DateOfSecondaryCapture" in ds or "TimeOfSecondaryCapture" in ds:
        ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = date, time
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time


# Type 2 attributes of the Patient and General Study modules: present in every object, empty
# when unknown. Exports often leave some out; highdicom copies them from the source and needs them.
_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip


def complete_identity(source: Dataset, *, frame_of_reference: bool = True) -> Dataset:
    """A shallow copy of ``source`` with missing Type 2 patient / study attributes set empty.

    A source without a Frame of Reference UID (anonymisers remove it) gets one derived from its
    study and series UIDs: the outputs need one to carry geometry, and all outputs of the series
    then share it. Not with ``frame_of_reference=False``: an image without a place in the
    patient (a radiograph) has no frame to refer to, and its outputs carry none either.
    """
    ds = copy.deepcopy(source)  # headers only (no pixel data): small
    for keyword in _TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    age = str(ds.get("PatientAge", ""))
    if age and not re.fullmatch(r"\d{3}[DWMY]", age):
        # Exports write ages like "0Y" that are invalid AS values; pad them or drop them.
        fixed = re.fullmatch(r"(\d{1,3})([DWMY])", age)
        ds.PatientAge = f"{int(fixed[1]):03d}{fixed[2]}" if fixed else ""
    if frame_of_reference and not ds.get("FrameOfReferenceUID"):
        ds.FrameOfReferenceUID = derived_uid(
            "frame-of-reference", str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        )
    return ds


def ds_values(values: Any) -> list[DSfloat]:
    """Decimal strings that fit the DS value representation (at most 16 characters)."""
    return [DSfloat(float(v), auto_format=True) for v in values]


@contextmanager
def quiet_highdicom() -> Iterator[None]:
    """Silence highdicom's UserWarnings about values copied unchanged from the source."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"highdicom\.")
        yield


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; it replaces ``path`` when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temporary_name(path.name))
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
