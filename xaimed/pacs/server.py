"""Open a client for a configured DICOM server (DICOMweb or DIMSE)."""

from __future__ import annotations

from xaimed.pacs.credentials import read_credentials
from xaimed.pacs.protocol import StudyServer
from xaimed.pacs.settings import ServerSettings


def open_server(settings: ServerSettings, key: str) -> StudyServer:
    """A client for ``settings``; ``key`` is its config key, for messages about credentials."""
    credentials = read_credentials(settings.credentials, f"{key}.credentials")
    if settings.protocol == "dicomweb":
        from xaimed.pacs.dicomweb import DicomWebServer

        return DicomWebServer(settings, credentials)
    from xaimed.pacs.dimse import DimseServer

    return DimseServer(settings)
