"""Config sections for DICOM servers: where studies come from, which ones, the cache, the store.

Credentials never live in the YAML: a server names environment variables or a credentials file,
read when the run starts, so a config can be shared and logged without secrets.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from xaimed.config.base import Strict
from xaimed.config.paths import resolve_path
from xaimed.units import parse_bytes

AET = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[ -~]*[!-~][ -~]*$")]


class TlsSettings(Strict):
    """TLS for DICOMweb (https) or DIMSE: a CA bundle to trust, and a client certificate."""

    ca_bundle: Path | None = Field(None, description="PEM file of the CAs to trust.")
    client_cert: Path | None = Field(None, description="PEM client certificate.")
    client_key: Path | None = Field(None, description="PEM key of the client certificate.")

    @field_validator("ca_bundle", "client_cert", "client_key")
    @classmethod
    def _relative(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_path(value, info)

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("give both `client_cert` and `client_key`, or neither")
        return self


class CredentialSettings(Strict):
    """Where the server's credentials are: environment variables or a file, never the YAML.

    ``auth: basic`` reads a user name and password, ``bearer`` a token. From the environment,
    ``<env_prefix>_USERNAME``, ``<env_prefix>_PASSWORD`` and ``<env_prefix>_TOKEN``; from ``file``,
    a YAML or JSON file with the keys ``username``, ``password`` or ``token``.
    """

    auth: Literal["none", "basic", "bearer"] = "none"
    env_prefix: str = Field("XAIMED_PACS", pattern=r"^[A-Z_][A-Z0-9_]*$")
    file: Path | None = Field(None, description="YAML/JSON file with username/password or token.")

    @field_validator("file")
    @classmethod
    def _relative(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_path(value, info)


class ServerSettings(Strict):
    """A DICOM server: DICOMweb (``url``) or DIMSE (``host``, ``port``, ``called_aet``)."""

    protocol: Literal["dicomweb", "dimse"]
    url: str | None = Field(None, description="DICOMweb root, e.g. http://host:8042/dicom-web.")
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    called_aet: AET | None = Field(None, description="The server's AE title.")
    calling_aet: AET = Field("XAIMED", description="Our AE title (the server must know it).")
    retrieve: Literal["get", "move"] = Field(
        "get", description="DIMSE retrieval: C-GET, or C-MOVE to our own storage SCP."
    )
    move_port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        None, description="C-MOVE: the port our storage SCP listens on (the server sends there)."
    )
    credentials: CredentialSettings = Field(default_factory=CredentialSettings)
    tls: TlsSettings | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    retries: Annotated[int, Field(ge=0, le=20)] = Field(
        4, description="Retries of a transient failure (refused, 5xx, association rejected)."
    )
    backoff_s: Annotated[float, Field(ge=0)] = Field(
        1.0, description="First wait before a retry; doubled at each further retry."
    )

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/\s]+", value):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _complete(self) -> ServerSettings:
        if self.protocol == "dicomweb":
            if not self.url:
                raise ValueError("protocol dicomweb needs `url`")
            if self.host or self.port or self.called_aet:
                raise ValueError("protocol dicomweb takes `url`, not `host`/`port`/`called_aet`")
        else:
            missing = [k for k in ("host", "port", "called_aet") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"protocol dimse needs {', '.join(missing)}")
            if self.url:
                raise ValueError("protocol dimse takes `host`, `port` and `called_aet`, not `url`")
            if self.retrieve == "move" and self.move_port is None:
                raise ValueError("retrieve: move needs `move_port` (where the server sends to)")
            if self.credentials.auth != "none":
                raise ValueError("DIMSE has no user authentication here; use `auth: none`")
        return self

    def describe(self) -> str:
        """Where the server is, for messages and records (never credentials)."""
        if self.protocol == "dicomweb":
            return str(self.url)
        return f"{self.called_aet}@{self.host}:{self.port}"


class QuerySettings(Strict):
    """Which studies of the server a run explains (INPUT ``pacs:``)."""

    modality: str | None = Field(None, description="Modality in the study, e.g. CT or MR.")
    study_date: str | None = Field(
        None, description="A date YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either end open)."
    )
    description: str | None = Field(
        None, description="Regular expression searched in Study Description (case-insensitive)."
    )
    limit: Annotated[int, Field(ge=1)] | None = Field(None, description="At most this many.")

    @field_validator("study_date")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        if value is not None and (value == "-" or not re.fullmatch(r"(\d{8})?-?(\d{8})?", value)):
            raise ValueError(f"expected YYYYMMDD or YYYYMMDD-YYYYMMDD, got {value!r}")
        return value

    @field_validator("description")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class CacheSettings(Strict):
    """Where retrieved studies are kept while their case runs."""

    folder: Path | None = Field(
        None, description="Cache folder; unset: `.pacs-cache` inside the output folder."
    )
    max_size: str | int = Field(
        "20GB", description="Size limit; the oldest finished studies are removed beyond it."
    )
    keep: bool = Field(False, description="Keep a study after its case is done (for reruns).")

    @field_validator("folder")
    @classmethod
    def _relative(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_path(value, info)

    @field_validator("max_size")
    @classmethod
    def _size(cls, value: str | int) -> str | int:
        parse_bytes(value)
        return value

    @property
    def max_bytes(self) -> int:
        """``max_size`` in bytes."""
        return parse_bytes(self.max_size)


class PacsSection(Strict):
    """The DICOM server cases come from (case lists with `study_uid`, or INPUT `pacs:`)."""

    server: ServerSettings
    query: QuerySettings = Field(default_factory=QuerySettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)


class StoreSettings(Strict):
    """Store each DICOM case's Parametric Map and Secondary Captures into its source study."""

    server: ServerSettings | Literal["source"] = Field(
        "source", description="'source': the server of `pacs.server`; or a server of its own."
    )
