"""Store a case's derived DICOM series into its source study, each instance once.

UIDs are deterministic (derived from the source, method, parameters and model), so the server
is asked which instances of the series it holds and only the missing ones are sent: a rerun
after a crash, or of finished work, stores nothing twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pydicom

from xaimed.config import Config
from xaimed.errors import OutputError
from xaimed.pacs.protocol import StudyServer
from xaimed.pacs.retry import PermanentError, TransientError, with_retries
from xaimed.pacs.server import open_server
from xaimed.pacs.settings import ServerSettings

log = logging.getLogger("xaimed")

T = TypeVar("T")


class StoreError(OutputError):
    """Derived series could not be stored on the DICOM server (after the retries)."""


class PacsStore:
    """Sends derived series to one server."""

    def __init__(self, settings: ServerSettings, key: str) -> None:
        self.settings = settings
        self.server: StudyServer = open_server(settings, key)

    def _retry(self, what: str, action: Callable[[], T]) -> T:
        return with_retries(
            action, what=what, retries=self.settings.retries, backoff_s=self.settings.backoff_s
        )

    def check(self) -> None:
        """Stop the run before any case when the server refuses us or cannot be reached."""
        try:
            self._retry("connecting to the DICOM server", self.server.check)
        except (TransientError, PermanentError) as exc:
            raise OutputError(f"outputs.store: {exc}; check the address and credentials.") from None

    def store(self, files: list[Path], *, case_id: str) -> dict[str, Any]:
        """Store ``files`` (the DICOM outputs of one map) where missing; what is on the server.

        Returns ``{"server", "series", "instances", "sent"}``. Raises StoreError with one
        sentence when the server fails after the retries.
        """
        by_series: dict[tuple[str, str], dict[str, Path]] = {}
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            key = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
            by_series.setdefault(key, {})[str(ds.SOPInstanceUID)] = path
        sent, t0 = 0, time.perf_counter()
        try:
            for (study, series), instances in sorted(by_series.items()):
                present = self._retry(
                    f"listing series {series}",
                    lambda s=study, r=series: self.server.instance_uids(s, r),
                )
                missing = [instances[uid] for uid in sorted(set(instances) - present)]
                if missing:
                    self._retry(f"storing series {series}", lambda m=missing: self.server.store(m))
                sent += len(missing)
                log.info(
                    "case %s: series %s: %d instance(s) stored, %d already on the server "
                    "(%.2f s)", case_id, series, len(missing), len(instances) - len(missing),
                    time.perf_counter() - t0,
                )  # fmt: skip
        except (TransientError, PermanentError) as exc:
            raise StoreError(
                f"case {case_id}: the DICOM outputs could not be stored ({exc}); they are kept in "
                "the output folder and the next run stores what is missing."
            ) from None
        return {
            "server": self.settings.describe(),
            "series": sorted(series for _, series in by_series),
            "instances": sum(len(v) for v in by_series.values()),
            "sent": sent,
        }

    def close(self) -> None:
        """Release the server connection."""
        self.server.close()


def store_for_run(config: Config) -> PacsStore:
    """The store ``outputs.store`` names (``source``: the server of ``pacs.server``)."""
    settings = config.outputs.store
    if settings is None:
        raise ValueError("store_for_run needs outputs.store")
    if settings.server == "source":
        if config.pacs is None:  # the config's cross-check refuses this
            raise ValueError("outputs.store.server 'source' needs a pacs section")
        return PacsStore(config.pacs.server, "pacs.server")
    return PacsStore(settings.server, "outputs.store.server")


def output_files(row: dict[str, Any]) -> list[Path]:
    """The DICOM files a method wrote for one map: its Parametric Map and Secondary Captures."""
    files = []
    if row.get("dicom_pm"):
        files.append(Path(row["dicom_pm"]))
    if row.get("dicom_sc"):
        files += sorted(Path(row["dicom_sc"]).glob("*.dcm"))
    return files
