"""Find DICOM studies in a folder of any layout and group their images into series.

Every file below the folder is tried as DICOM (exports often have no extension, nested folders,
a DICOMDIR or none); files that are not DICOM are ignored. Images are grouped by Study Instance
UID, then Series Instance UID, and a series is split further when it mixes orientations, matrix
sizes, or acquisitions that repeat the same slice positions. Objects that are not images (SR,
RTSTRUCT, SEG, presentation states, DICOMDIR) and the objects xaimed wrote itself are skipped with
a log line. Only headers are read here; pixel data are decoded when a series is read.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from xaimed.errors import InputError
from xaimed.io.dicom.frames import Frame, frames_of
from xaimed.io.dicom.planar import RADIOGRAPH_SOP_CLASSES
from xaimed.io.safety import regular_files

log = logging.getLogger("xaimed")

# What we write into our own outputs, so that a rerun on a folder holding them skips them.
XAIMED_MANUFACTURER = "xaimed"

# Image storage classes read: planes that can form a volume (classic, enhanced and
# legacy-converted CT / MR / PET, secondary captures with image-plane geometry), and
# single-frame 2D images (projection radiographs, secondary captures without it).
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image Storage
    "1.2.840.10008.5.1.4.1.1.128.1",  # Legacy Converted Enhanced PET Image Storage
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
} | RADIOGRAPH_SOP_CLASSES  # single-frame 2D images: CR, DX, MG, IO
SKIP_SUFFIXES = (".nii", ".nii.gz", ".json", ".csv", ".png", ".txt", ".md", ".yaml", ".yml")


@dataclass(frozen=True)
class DicomSeries:
    """One stack of image planes: a whole series, or one part of a series that was split."""

    study_uid: str
    series_uid: str
    part: int  # 0 for an unsplit series; 1, 2, ... for the parts of a split one
    parts: int
    modality: str
    description: str
    series_number: int | None
    frames: list[Frame]
    headers: dict[str, Dataset]  # SOP Instance UID -> header without pixel data
    # Files next to the series' files that look like DICOM (preamble) but cannot be parsed:
    # one of them may be a slice of this series, so reading it is refused rather than silently
    # giving a volume with a slice missing at its end.
    broken: tuple[Path, ...] = ()

    @property
    def label(self) -> str:
        """The Series Instance UID, with ``#part`` when the series was split."""
        return self.series_uid if self.parts == 1 else f"{self.series_uid}#{self.part}"

    @property
    def voxels(self) -> int:
        """Number of voxels, for choosing the largest volume."""
        return sum(f.rows * f.columns for f in self.frames)

    @property
    def files(self) -> list[Path]:
        """The files holding the planes, without repeats, in name order."""
        return sorted({f.path for f in self.frames})


@dataclass(frozen=True)
class DicomStudy:
    """The image series of one study found under the input."""

    study_uid: str
    series: list[DicomSeries]
    # Series left out because no plane of theirs could be read: (a file, why). A study with no
    # readable series is still a case, which fails with the first reason, so that it is a
    # failed row in the manifest, not a log line that is easy to miss.
    unreadable: tuple[tuple[Path, str], ...] = ()

    @property
    def case_id(self) -> str:
        """A file-name-safe id made from a hash of the Study Instance UID, never patient data."""
        return "study-" + hashlib.sha256(self.study_uid.encode()).hexdigest()[:12]

    @property
    def folder(self) -> Path:
        """The deepest folder holding every file of the study."""
        paths = [p for s in self.series for p in s.files] or [p for p, _ in self.unreadable]
        return Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path(".")


def read_header(path: Path) -> Dataset | None:
    """The header of ``path`` without pixel data, or None when it is not a DICOM file."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        # pydicom's parser raises many kinds of error on corrupt bytes (struct.error, ValueError,
        # KeyError, OverflowError, ...); any of them means "no usable DICOM header here", and
        # scan_dicom reports files with the DICOM preamble that end up here as broken.
        return None


def _looks_like_dicom(path: Path) -> bool:
    """Whether ``path`` carries the DICOM preamble magic (``DICM`` at byte 128)."""
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _incomplete(ds: Dataset) -> bool:
    """A header cut short: no SOP class, or an image without its study / series UIDs."""
    sop_class = _sop_class(ds)
    missing_uids = "StudyInstanceUID" not in ds or "SeriesInstanceUID" not in ds
    return not sop_class or (sop_class in IMAGE_SOP_CLASSES and missing_uids)


def _sop_class(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID") or ds.get("file_meta", Dataset()).get("MediaStorageSOPClassUID")
    return str(uid or "")


def _skip_reason(ds: Dataset) -> str | None:
    sop_class = _sop_class(ds)
    if str(ds.get("Manufacturer", "")) == XAIMED_MANUFACTURER:
        return "an xaimed output"
    if sop_class not in IMAGE_SOP_CLASSES:
        name = UID(sop_class).name if sop_class else "no SOP class"
        return f"not an image series ({name})"
    if "StudyInstanceUID" not in ds or "SeriesInstanceUID" not in ds:
        return "no Study / Series Instance UID"
    return None


def candidate_files(files: list[Path]) -> list[Path]:
    """The files of a folder's listing worth trying as DICOM: not hidden, not a known other kind."""
    return sorted(
        p
        for p in files
        if not p.name.lower().endswith(SKIP_SUFFIXES) and not p.name.startswith(".")
    )


def _candidates(folder: Path) -> list[Path]:
    return candidate_files(regular_files(folder))


def scan_dicom(paths: Path | list[Path]) -> list[DicomStudy]:
    """Studies in a folder (or a list of files), in order of case id; may be empty."""
    files = _candidates(paths) if isinstance(paths, Path) else sorted(paths)
    by_series: dict[tuple[str, str], list[tuple[Path, Dataset]]] = defaultdict(list)
    broken: list[Path] = []
    for path in files:
        ds = read_header(path)
        if ds is None or _incomplete(ds):
            if _looks_like_dicom(path):
                log.warning("%s: a DICOM file that cannot be read (truncated or corrupt)", path)
                broken.append(path)
            continue
        reason = _skip_reason(ds)
        if reason is not None:
            log.info("skipping %s: %s", path, reason)
            continue
        by_series[(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))].append((path, ds))
    studies: dict[str, list[DicomSeries]] = defaultdict(list)
    unreadable: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    for (study_uid, series_uid), items in sorted(by_series.items()):
        folders = {p.parent for p, _ in items}
        near = tuple(p for p in broken if p.parent in folders)
        found_series, problem = _series(study_uid, series_uid, items)
        if problem is not None:
            unreadable[study_uid].append((items[0][0], problem))
        studies[study_uid] += [replace(s, broken=near) for s in found_series]
    found = [
        DicomStudy(uid, studies[uid], tuple(unreadable[uid]))
        for uid in sorted(set(studies) | set(unreadable))
        if studies[uid] or unreadable[uid]
    ]
    return sorted(found, key=lambda s: s.case_id)


def _series(
    study_uid: str, series_uid: str, items: list[tuple[Path, Dataset]]
) -> tuple[list[DicomSeries], str | None]:
    """The series' stacks, or none and why no plane of it could be read."""
    frames: list[Frame] = []
    headers: dict[str, Dataset] = {}
    unreadable: list[str] = []
    for path, ds in items:
        try:
            frames += frames_of(ds, path)
        except InputError as exc:
            unreadable.append(str(exc))
            continue
        headers[str(ds.SOPInstanceUID)] = ds
    first = items[0][1]
    if unreadable and not frames:
        log.warning("skipping series %s: %s", series_uid, unreadable[0])
        return [], unreadable[0]
    for message in unreadable:
        log.warning("series %s: leaving out a plane: %s", series_uid, message)
    groups = _split(frames)
    if len(groups) > 1:
        log.info(
            "series %s mixes %d stacks (orientations, sizes or acquisitions); split into parts",
            series_uid,
            len(groups),
        )
    number = first.get("SeriesNumber")
    stacks = [
        DicomSeries(
            study_uid=study_uid,
            series_uid=series_uid,
            part=0 if len(groups) == 1 else i + 1,
            parts=len(groups),
            modality=str(first.get("Modality", "")),
            description=str(first.get("SeriesDescription", "")),
            series_number=_series_number(number),
            frames=group,
            headers={
                uid: ds
                for uid, ds in headers.items()
                if any(f.sop_instance_uid == uid for f in group)
            },
        )
        for i, group in enumerate(groups)
    ]
    return stacks, None


def _series_number(value: object) -> int | None:
    """Series Number as an int; None when absent or unparsable (it only breaks ties)."""
    try:
        return int(value) if value not in (None, "") else None  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return None


def _split(frames: list[Frame]) -> list[list[Frame]]:
    """Split planes into stacks of one orientation and size, then by acquisition.

    Acquisitions are separated only where positions repeat within a stack. A 2D image without
    a place in the patient is always a part of its own.
    """
    stacks: dict[tuple, list[Frame]] = defaultdict(list)
    out: list[list[Frame]] = []
    for frame in frames:
        if not frame.in_patient:
            # A 2D image without a place in the patient (a radiograph) is an image of its own:
            # a series of PA and lateral views is two images, never one stack.
            out.append([frame])
            continue
        key = (tuple(np.round(frame.orientation, 3)), frame.rows, frame.columns)
        stacks[key].append(frame)
    for stack in stacks.values():
        positions = [tuple(np.round(f.position, 2)) for f in stack]
        if len(set(positions)) == len(positions):
            out.append(stack)
            continue
        by_acq: dict[str, list[Frame]] = defaultdict(list)
        for frame in stack:
            by_acq[frame.acquisition].append(frame)
        parts = list(by_acq.values())
        # Splitting by acquisition helps only when every part has distinct positions and more
        # than one plane; otherwise keep the stack whole and let the reader refuse it clearly.
        if len(parts) > 1 and all(
            len(p) > 1 and len({tuple(np.round(f.position, 2)) for f in p}) == len(p) for p in parts
        ):
            out += parts
        else:
            out.append(stack)
    return out
