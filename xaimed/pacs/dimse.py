"""DIMSE (C-ECHO, C-FIND, C-GET or C-MOVE, C-STORE) through pynetdicom."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind as FIND,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet as GET,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelMove as MOVE,
)
from pynetdicom.sop_class import Verification

from xaimed.io.dicom.discovery import IMAGE_SOP_CLASSES
from xaimed.pacs.protocol import SeriesInfo, StudyInfo, filter_studies
from xaimed.pacs.retry import PermanentError, TransientError
from xaimed.pacs.settings import QuerySettings, ServerSettings

# pynetdicom logs every PDU at INFO; a cohort run's log must stay readable.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

# Receive instances as they are stored: every transfer syntax our readers decode.
RECEIVE_SYNTAXES = [
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian, RLELossless, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1,
    JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000,
]  # fmt: skip
PENDING = (0xFF00, 0xFF01)
SUCCESS_OR_WARNING = (0x0000, 0xB000, 0xB006, 0xB007)


def _status(response: Dataset | None) -> int | None:
    return int(response.Status) if response is not None and "Status" in response else None


class DimseServer:
    """A DICOM server reached by DIMSE; one association per operation."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.where = settings.describe()

    def _ae(self) -> AE:
        ae = AE(ae_title=self.settings.calling_aet)
        timeout = self.settings.timeout_s
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        ae.connection_timeout = timeout
        return ae

    def _tls(self) -> tuple[ssl.SSLContext, str] | None:
        tls = self.settings.tls
        if tls is None:
            return None
        context = ssl.create_default_context(cafile=str(tls.ca_bundle) if tls.ca_bundle else None)
        if tls.client_cert is not None:
            context.load_cert_chain(str(tls.client_cert), str(tls.client_key))
        return context, str(self.settings.host)

    @contextmanager
    def _association(
        self, ae: AE, what: str, handlers: list[Any] | None = None, roles: list[Any] | None = None
    ) -> Iterator[Association]:
        assoc = ae.associate(
            str(self.settings.host),
            int(self.settings.port or 0),
            ae_title=str(self.settings.called_aet),
            ext_neg=roles,
            evt_handlers=handlers,
            tls_args=self._tls(),
        )
        if not assoc.is_established:
            if assoc.is_rejected:
                reason = "rejected the association"
            elif assoc.is_aborted:
                reason = "aborted the association"
            else:
                reason = "cannot be reached"
            raise TransientError(f"the DICOM server {self.where} {reason} while {what}")
        try:
            yield assoc
        finally:
            assoc.release()

    def _find(self, identifier: Dataset, what: str) -> list[Dataset]:
        ae = self._ae()
        ae.add_requested_context(FIND)
        found = []
        with self._association(ae, what) as assoc:
            for status, match in assoc.send_c_find(identifier, FIND):
                code = _status(status)
                if code in PENDING and match is not None:
                    found.append(match)
                elif code is None:
                    raise TransientError(f"{self.where} dropped the connection while {what}")
                elif code != 0x0000:
                    raise PermanentError(f"{self.where} answered status 0x{code:04X} while {what}")
        return found

    def check(self) -> None:
        """C-ECHO: reachability and whether the server accepts our AE title."""
        ae = self._ae()
        ae.add_requested_context(Verification)
        with self._association(ae, "checking the connection") as assoc:
            code = _status(assoc.send_c_echo())
            if code != 0x0000:
                raise PermanentError(f"{self.where} refused C-ECHO (status {code})")

    def find_studies(self, query: QuerySettings) -> list[StudyInfo]:
        """C-FIND at study level; the description regex is applied here."""
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = ""
        ds.StudyDate = query.study_date or ""
        ds.StudyDescription = ""
        ds.ModalitiesInStudy = query.modality or ""
        studies = [
            StudyInfo(
                str(m.get("StudyInstanceUID", "")),
                str(m.get("StudyDate", "")),
                str(m.get("StudyDescription", "")),
                tuple(str(v) for v in _as_list(m.get("ModalitiesInStudy", ""))),
            )
            for m in self._find(ds, "searching for studies")
        ]
        return filter_studies(studies, query)

    def find_series(self, study_uid: str) -> list[SeriesInfo]:
        """C-FIND at series level in one study."""
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = ""
        ds.Modality = ""
        ds.SeriesDescription = ""
        return [
            SeriesInfo(
                str(m.get("SeriesInstanceUID", "")),
                str(m.get("Modality", "")),
                str(m.get("SeriesDescription", "")),
            )
            for m in self._find(ds, f"searching the series of study {study_uid}")
        ]

    def instance_uids(self, study_uid: str, series_uid: str) -> set[str]:
        """C-FIND at image level in one series."""
        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ""
        found = self._find(ds, f"listing the instances of series {series_uid}")
        return {str(m.SOPInstanceUID) for m in found if "SOPInstanceUID" in m}

    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> int:
        """C-GET (instances come back on our association) or C-MOVE (to our storage SCP)."""
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        received = _Receiver(folder)
        what = f"retrieving series {series_uid}"
        storage = [build_context(uid, RECEIVE_SYNTAXES) for uid in sorted(IMAGE_SOP_CLASSES)]
        if self.settings.retrieve == "get":
            ae = self._ae()
            ae.add_requested_context(GET)
            for context in storage:
                ae.add_requested_context(context.abstract_syntax, context.transfer_syntax)
            roles = [build_role(c.abstract_syntax, scp_role=True) for c in storage]
            handlers = [(evt.EVT_C_STORE, received.handle)]
            with self._association(ae, what, handlers, roles) as assoc:
                self._check_retrieve(assoc.send_c_get(ds, GET), what)
        else:
            self._move(ds, storage, received, what)
        return received.count

    def _move(
        self, ds: Dataset, storage: list[PresentationContext], received: _Receiver, what: str
    ) -> None:
        scp = self._ae()
        scp.supported_contexts = storage
        try:
            server = scp.start_server(
                ("", int(self.settings.move_port or 0)),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, received.handle)],
            )
        except OSError as exc:
            raise PermanentError(
                f"cannot listen on port {self.settings.move_port} for C-MOVE ({exc.strerror}); "
                "choose another pacs.server.move_port"
            ) from None
        try:
            ae = self._ae()
            ae.add_requested_context(MOVE)
            with self._association(ae, what) as assoc:
                responses = assoc.send_c_move(ds, self.settings.calling_aet, MOVE)
                self._check_retrieve(responses, what)
        finally:
            server.shutdown()

    def _check_retrieve(self, responses: Iterator[Any], what: str) -> None:
        final = None
        for status, _ in responses:
            code = _status(status)
            if code is None:
                raise TransientError(f"{self.where} dropped the connection while {what}")
            if code not in PENDING:
                final = code
        if final in (0xA701, 0xA702):
            raise TransientError(f"{self.where} is out of resources (0x{final:04X}) while {what}")
        if final not in SUCCESS_OR_WARNING:
            hint = (
                f"; does the server know our AE title {self.settings.calling_aet}?"
                if self.settings.retrieve == "move" else ""
            )  # fmt: skip
            raise PermanentError(
                f"{self.where} answered status 0x{(final or 0):04X} while {what}{hint}"
            )

    def store(self, files: list[Path]) -> None:
        """C-STORE every file on one association."""
        datasets = [pydicom.dcmread(path) for path in files]
        ae = self._ae()
        for uid, syntax in sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID))
                                   for d in datasets}):  # fmt: skip
            ae.add_requested_context(uid, syntax)
        what = f"storing into study {datasets[0].StudyInstanceUID}"
        with self._association(ae, what) as assoc:
            for ds in datasets:
                code = _status(assoc.send_c_store(ds))
                if code is None:
                    raise TransientError(f"{self.where} dropped the connection while {what}")
                if code not in SUCCESS_OR_WARNING:
                    kind = TransientError if code in (0xA700, 0xA701, 0xA702) else PermanentError
                    raise kind(
                        f"{self.where} refused an instance (status 0x{code:04X}) while {what}"
                    )

    def close(self) -> None:
        """Nothing is held between operations."""


class _Receiver:
    """Writes the instances a C-GET or C-MOVE delivers, counting them (thread-safe)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self.lock = threading.Lock()

    def handle(self, event: Any) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        uid = str(event.request.AffectedSOPInstanceUID)
        (self.folder / f"{uid}.dcm").write_bytes(event.encoded_dataset())
        with self.lock:
            self.count += 1
        return 0x0000


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [v for v in value.split("\\") if v]
    return list(value) if value else []
