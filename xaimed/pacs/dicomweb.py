"""DICOMweb (QIDO-RS, WADO-RS, STOW-RS) through dicomweb-client."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from xaimed.pacs.credentials import Credentials
from xaimed.pacs.protocol import SeriesInfo, StudyInfo, filter_studies
from xaimed.pacs.retry import PermanentError, TransientError
from xaimed.pacs.settings import QuerySettings, ServerSettings

T = TypeVar("T")

# dicomweb-client logs every request at INFO; a cohort run's log must stay readable.
logging.getLogger("dicomweb_client").setLevel(logging.WARNING)

# Ask for the instances as stored (no transcoding by the server): the map must come from the
# same pixel data as reading the study from a folder.
AS_STORED = (("application/dicom", "*"),)
QIDO_PAGE = 500


def _value(item: dict[str, Any], tag: str) -> str:
    """The first value of a DICOM JSON attribute, '' when absent (QIDO omits empty ones)."""
    values = item.get(tag, {}).get("Value") or [""]
    first = values[0]
    return str(first.get("Alphabetic", "") if isinstance(first, dict) else first)


class DicomWebServer:
    """A DICOMweb server; every call maps HTTP failures to Transient/PermanentError."""

    def __init__(self, settings: ServerSettings, credentials: Credentials) -> None:
        self.settings = settings
        session = requests.Session()
        if credentials.auth == "basic":
            session.auth = (credentials.username or "", credentials.password or "")
        elif credentials.auth == "bearer":
            session.headers["Authorization"] = f"Bearer {credentials.token}"
        if settings.tls is not None:
            if settings.tls.ca_bundle is not None:
                session.verify = str(settings.tls.ca_bundle)
            if settings.tls.client_cert is not None:
                session.cert = (str(settings.tls.client_cert), str(settings.tls.client_key))
        self.session = session
        self.client = DICOMwebClient(str(settings.url), session=session, timeout=settings.timeout_s)

    def _call(self, what: str, action: Callable[[], T]) -> T:
        where = self.settings.describe()
        try:
            return action()
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in (401, 403):
                raise PermanentError(
                    f"the DICOMweb server {where} refused our credentials (HTTP {status}) while "
                    f"{what}; check pacs credentials (auth, env_prefix or file)"
                ) from None
            if status >= 500 or status in (408, 429):
                raise TransientError(f"{where} answered HTTP {status} while {what}") from None
            raise PermanentError(f"{where} answered HTTP {status} while {what}") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            reason = "timed out" if isinstance(exc, requests.Timeout) else "cannot be reached"
            raise TransientError(f"the DICOMweb server {where} {reason} while {what}") from None

    def _paged(
        self, what: str, uid_tag: str, search: Callable[[int, int], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Every result of a QIDO search, page by page.

        Paged by hand, not with the client's ``get_remaining``: some servers ignore ``offset``
        under some filters (Orthanc 1.10 with ModalitiesInStudy) and return the same page for
        ever; a page that adds nothing new ends the search here.
        """
        found: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            page = self._call(what, lambda offset=offset: search(offset, QIDO_PAGE))
            new = {_value(item, uid_tag) for item in page} - found.keys()
            for item in page:
                found.setdefault(_value(item, uid_tag), item)
            if len(page) < QIDO_PAGE or not new:
                return list(found.values())
            offset += len(page)

    def check(self) -> None:
        """One QIDO request for at most one study: reachability and credentials."""
        self._call("checking the connection", lambda: self.client.search_for_studies(limit=1))

    def find_studies(self, query: QuerySettings) -> list[StudyInfo]:
        """QIDO-RS study search; the description regex is applied here (QIDO has none)."""
        filters: dict[str, Any] = {}
        if query.modality:
            filters["ModalitiesInStudy"] = query.modality
        if query.study_date:
            filters["StudyDate"] = query.study_date
        found = self._paged(
            "searching for studies",
            "0020000D",
            lambda offset, limit: self.client.search_for_studies(
                search_filters=filters,
                fields=["StudyDescription", "StudyDate", "ModalitiesInStudy"],
                offset=offset,
                limit=limit,
            ),
        )
        studies = [
            StudyInfo(
                _value(item, "0020000D"),
                _value(item, "00080020"),
                _value(item, "00081030"),
                tuple(str(v) for v in item.get("00080061", {}).get("Value", [])),
            )
            for item in found
        ]
        return filter_studies(studies, query)

    def find_series(self, study_uid: str) -> list[SeriesInfo]:
        """QIDO-RS series search in one study."""
        found = self._paged(
            f"searching the series of study {study_uid}",
            "0020000E",
            lambda offset, limit: self.client.search_for_series(
                study_instance_uid=study_uid,
                fields=["Modality", "SeriesDescription"],
                offset=offset,
                limit=limit,
            ),
        )
        return [
            SeriesInfo(_value(i, "0020000E"), _value(i, "00080060"), _value(i, "0008103E"))
            for i in found
        ]

    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> int:
        """WADO-RS: stream the series' instances, as stored, into ``folder``."""

        def fetch() -> int:
            count = 0
            for ds in self.client.iter_series(study_uid, series_uid, media_types=AS_STORED):
                _save(ds, folder)
                count += 1
            return count

        return self._call(f"retrieving series {series_uid}", fetch)

    def instance_uids(self, study_uid: str, series_uid: str) -> set[str]:
        """QIDO-RS instance search in one series."""
        found = self._paged(
            f"listing the instances of series {series_uid}",
            "00080018",
            lambda offset, limit: self.client.search_for_instances(
                study_instance_uid=study_uid,
                series_instance_uid=series_uid,
                fields=["SOPInstanceUID"],
                offset=offset,
                limit=limit,
            ),
        )
        return {_value(item, "00080018") for item in found}

    def store(self, files: list[Path]) -> None:
        """STOW-RS, a few instances per request so one request never holds a whole series."""
        for start in range(0, len(files), 16):
            datasets = [pydicom.dcmread(path) for path in files[start : start + 16]]
            study = str(datasets[0].StudyInstanceUID)
            self._call(
                f"storing into study {study}",
                lambda datasets=datasets, study=study: self.client.store_instances(
                    datasets, study_instance_uid=study
                ),
            )

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()


def _save(ds: pydicom.Dataset, folder: Path) -> Path:
    """Write a retrieved instance under its SOP Instance UID (never a patient attribute)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
