"""Cases whose studies live on a DICOM server: listed from a query, retrieved when read."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from xaimed.config import Config
from xaimed.errors import ConfigError, InputError
from xaimed.io.cases import Case
from xaimed.pacs.cache import StudyCache
from xaimed.pacs.protocol import SeriesInfo, StudyServer
from xaimed.pacs.retry import PermanentError, TransientError, with_retries
from xaimed.pacs.server import open_server
from xaimed.pacs.settings import PacsSection

log = logging.getLogger("xaimed")

T = TypeVar("T")

PACS_INPUT = "pacs:"
# Series that are never image volumes: not worth retrieving.
NOT_IMAGES = {"SR", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "PR", "KO", "REG", "DOC", "OT"}


def is_pacs_input(text: str | Path) -> bool:
    """INPUT ``pacs:``: the studies matching ``pacs.query`` on ``pacs.server``."""
    return str(text).strip().lower() == PACS_INPUT


def remote_cases(cases: list[Case], source: PacsSource | None) -> list[Case]:
    """``cases`` with those naming a study on a server tied to ``source``; without a ``pacs``
    section such cases cannot be read, which stops the run before it starts."""
    if source is not None:
        return source.adopt(cases)
    remote = [c.case_id for c in cases if c.format == "pacs"]
    if remote:
        raise ConfigError(
            f"case(s) {', '.join(remote[:3])}{' …' if len(remote) > 3 else ''} name a study_uid "
            "but the config has no pacs section; add pacs.server."
        )
    return cases


def study_case_id(study_uid: str) -> str:
    """The same id a study read from a folder gets, so outputs match whichever way it came."""
    return "study-" + hashlib.sha256(study_uid.encode()).hexdigest()[:12]


class PacsSource:
    """A run's DICOM server and cache: lists studies, retrieves a case's study on demand."""

    def __init__(
        self, section: PacsSection, out_dir: Path, modality: str | None, description: str | None
    ) -> None:
        self.section = section
        self.server: StudyServer = open_server(section.server, "pacs.server")
        root = section.cache.folder or out_dir / ".pacs-cache"
        self.cache = StudyCache(root, section.cache.max_bytes, section.cache.keep)
        # dicom.select narrows what is worth retrieving; the reader still picks among them.
        self.modality = modality
        self.description = re.compile(description, re.IGNORECASE) if description else None

    def _retry(self, what: str, action: Callable[[], T]) -> T:
        settings = self.section.server
        return with_retries(
            action, what=what, retries=settings.retries, backoff_s=settings.backoff_s
        )

    @classmethod
    def for_run(cls, config: Config, out_dir: Path) -> PacsSource | None:
        """The run's source of remote studies, or None when the config has no ``pacs``."""
        if config.pacs is None:
            return None
        select = config.dicom.select
        return cls(config.pacs, out_dir, select.modality, select.description)

    def adopt(self, cases: list[Case]) -> list[Case]:
        """Case-list entries naming a ``study_uid``, tied to this server and cache."""
        return [
            self.case(c.case_id, str(c.study_uid), mask=c.mask, label=c.label)
            if c.format == "pacs" else c
            for c in cases
        ]  # fmt: skip

    def check(self) -> None:
        """Stop the run before any case when the server refuses us or cannot be reached."""
        where = self.section.server.describe()
        try:
            self._retry("connecting to the DICOM server", self.server.check)
        except (TransientError, PermanentError) as exc:
            raise ConfigError(f"pacs.server: {exc}; check the address and credentials.") from None
        log.info("DICOM server %s reached", where)

    def query_cases(self) -> list[Case]:
        """One case per study matching ``pacs.query``, in study date order."""
        try:
            studies = self._retry(
                "searching for studies", lambda: self.server.find_studies(self.section.query)
            )
        except (TransientError, PermanentError) as exc:
            raise ConfigError(f"pacs.query: {exc}.") from None
        if not studies:
            raise InputError(
                f"no study on {self.section.server.describe()} matches pacs.query; widen it."
            )
        return [self.case(study_case_id(s.study_uid), s.study_uid) for s in studies]

    def case(self, case_id: str, study_uid: str, **extra: object) -> Case:
        """A case for one study on the server (read later, by ``resolve``)."""
        return Case(
            case_id,
            self.cache.folder(study_uid),
            format="pacs",
            study_uid=study_uid,
            remote=self.section.server.describe(),
            **extra,  # type: ignore[arg-type]
        )

    def resolve(self, case: Case) -> Case:
        """Retrieve ``case``'s study (once: the cache keeps it) and return it as a DICOM case."""
        from xaimed.io.dicom import scan_dicom

        uid = str(case.study_uid)
        t0 = time.perf_counter()
        try:
            folder, fetched = self.cache.get(uid, lambda into: self._fetch(uid, into))
        except (TransientError, PermanentError) as exc:
            raise InputError(
                f"case {case.case_id}: study {uid} could not be retrieved ({exc}); the next run "
                "retries it."
            ) from None
        studies = [s for s in scan_dicom(folder) if s.study_uid == uid]
        if not studies:
            raise InputError(
                f"case {case.case_id}: study {uid} on {case.remote} has no image series "
                "matching dicom.select; check the study or dicom.select."
            )
        if fetched:
            log.info("case %s: study retrieved in %.1f s", case.case_id, time.perf_counter() - t0)
        else:
            log.info("case %s: study found in the cache", case.case_id)
        return replace(case, path=folder, format="dicom", study=studies[0])

    def release(self, case: Case) -> None:
        """The case is done: free its cached study unless the cache keeps studies."""
        if case.study_uid:
            self.cache.release(case.study_uid)

    def _wanted(self, series: SeriesInfo) -> bool:
        if series.modality.upper() in NOT_IMAGES:
            return False
        if self.modality and series.modality.upper() != self.modality.upper():
            return False
        return not (self.description and not self.description.search(series.description))

    def _fetch(self, uid: str, into: Path) -> None:
        series = self._retry(f"listing study {uid}", lambda: self.server.find_series(uid))
        wanted = [s for s in series if self._wanted(s)]
        if not series:
            raise PermanentError(f"{self.section.server.describe()} has no study {uid}")
        for item in wanted:
            target = into / hashlib.sha256(item.series_uid.encode()).hexdigest()[:16]
            self._retry(
                f"retrieving series {item.series_uid}",
                lambda item=item, target=target: self.server.retrieve_series(
                    uid, item.series_uid, target
                ),
            )

    def close(self) -> None:
        """Release the server connection."""
        self.server.close()
