"""A case: one study to explain, as discovery or a case list found it, before it is read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xaimed.io.dicom.discovery import DicomStudy


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
    """

    case_id: str
    path: Path
    format: str | None = "nifti"
    study: DicomStudy | None = None
    mask: Path | None = None
    label: str | None = None
    study_uid: str | None = None
    remote: str | None = None

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
