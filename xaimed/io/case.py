"""A case: one study to explain, as discovery or a case list found it, before it is read."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xaimed.io.dicom.discovery import DicomStudy


@dataclass(frozen=True)
class ChannelFile:
    """One channel of a multi-sequence case: its name (a case-list column) and its file."""

    name: str
    path: Path


@dataclass(frozen=True)
class Case:
    """One study to explain: an id safe for file names, and where its image is.

    ``format`` names the :class:`xaimed.io.readers.Reader` that reads it (``"nifti"``,
    ``"itk"`` for NRRD and MetaImage, ``"dicom"``), is ``"pacs"`` for a study on a DICOM server
    (its ``study_uid``; retrieved and turned into a DICOM case by
    :class:`xaimed.pacs.source.PacsSource` when it is read), or None for a case-list entry: its
    path is only looked at when it is read, so a missing or corrupt entry fails that case, not
    the run. A DICOM case carries its ``study`` (its series, headers only) and ``path`` is the
    study's folder. ``mask`` and ``label`` come from a case list's optional columns.
    A multi-sequence case (config ``preprocessing.channels`` naming case-list columns) carries
    one :class:`ChannelFile` per channel in ``channels``, in the config's order; its ``path`` is
    the first channel's file.
    """

    case_id: str
    path: Path
    format: str | None = "nifti"
    study: DicomStudy | None = None
    mask: Path | None = None
    label: str | None = None
    study_uid: str | None = None
    remote: str | None = None
    channels: tuple[ChannelFile, ...] = ()

    @property
    def source(self) -> str:
        """Where the case comes from, for the manifest and sidecar: its path, or for a study on
        a DICOM server (``format`` ``"pacs"``) the server and the Study Instance UID."""
        if self.study_uid is not None and self.remote is not None:
            return f"{self.remote}/studies/{self.study_uid}"
        return str(self.path)


def safe_id(name: str) -> str:
    """``name`` with every run of characters unsafe in file names replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"


def cases_by_stem(
    paths: list[Path], root: Path, stem: Callable[[Path], str], format: str
) -> list[Case]:
    """One case per file of ``paths`` (sorted), named by ``stem(path)``; a file name found in
    several subfolders of ``root`` is named by its path relative to ``root``, so ids stay apart."""
    paths = sorted(paths)
    stems = [safe_id(stem(p)) for p in paths]
    cases = []
    for path, name in zip(paths, stems, strict=True):
        if stems.count(name) > 1:
            rel = path.relative_to(root)
            name = safe_id("__".join([*rel.parent.parts, stem(path)]))
        cases.append(Case(name, path, format=format))
    return cases
