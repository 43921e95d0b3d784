"""What a run needs of a DICOM server, whatever its protocol: find, retrieve, store."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from xaimed.pacs.settings import QuerySettings, ServerSettings


@dataclass(frozen=True)
class StudyInfo:
    """A study found on a server (no patient attributes: they are not needed and not kept)."""

    study_uid: str
    date: str
    description: str
    modalities: tuple[str, ...]


@dataclass(frozen=True)
class SeriesInfo:
    """A series of a study on a server."""

    series_uid: str
    modality: str
    description: str


class StudyServer(Protocol):
    """What a run needs of a DICOM server. Methods raise ``TransientError`` for failures worth
    retrying and ``PermanentError`` for the others, each with a message naming the server."""

    settings: ServerSettings

    def check(self) -> None:
        """Connect and authenticate once, so a wrong address or password stops the run early."""

    def find_studies(self, query: QuerySettings) -> list[StudyInfo]:
        """The studies matching ``query`` (modality and date on the server, regex here)."""

    def find_series(self, study_uid: str) -> list[SeriesInfo]:
        """The series of one study."""

    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> int:
        """Write the instances of one series as DICOM files into ``folder``; their number."""

    def instance_uids(self, study_uid: str, series_uid: str) -> set[str]:
        """SOP Instance UIDs of a series already on the server (empty for an unknown series)."""

    def store(self, files: list[Path]) -> None:
        """Store DICOM files (one series of one study) on the server."""

    def close(self) -> None:
        """Release connections and listening sockets."""


def filter_studies(studies: list[StudyInfo], query: QuerySettings) -> list[StudyInfo]:
    """Apply what servers cannot: the description regex, then a stable order and the limit."""
    if query.description:
        pattern = re.compile(query.description, re.IGNORECASE)
        studies = [s for s in studies if pattern.search(s.description)]
    studies = sorted(studies, key=lambda s: (s.date, s.study_uid))
    return studies[: query.limit] if query.limit else studies
