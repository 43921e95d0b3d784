"""Deterministic DICOM UIDs for derived objects.

A rerun of the same explanation must produce the same UIDs, so that a PACS sees a re-send as the
same object rather than a duplicate series. The UID is the ``2.25.<integer>`` form of a name-based
(version 5) UUID of everything that defines the object: the source UIDs, the method, its
parameters and post-processing, the target and the model's SHA-256. Hand-written because pydicom's
``generate_uid(prefix=None)`` ignores its entropy sources and is random.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

# A fixed namespace for xaimed's name-based UUIDs.
_NAMESPACE = uuid.UUID("5b0c8f0e-6a57-4d8e-9a51-1f6d1c2b7a10")


def derived_uid(*parts: str) -> str:
    """A ``2.25.`` UID that depends only on ``parts`` (no time, no randomness)."""
    name = "\x1f".join(["xaimed", *parts])
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"


@dataclass(frozen=True)
class DerivationKey:
    """What makes one derived series unique; every UID of its objects is derived from it."""

    source_series: str  # the source series label (Series Instance UID, #part when split)
    method: str
    params: dict[str, Any]
    target: str
    model_sha256: str

    def text(self) -> str:
        """A canonical text form of the key (JSON with sorted keys)."""
        return json.dumps(
            {
                "source_series": self.source_series,
                "method": self.method,
                "params": self.params,
                "target": self.target,
                "model": self.model_sha256,
            },
            sort_keys=True,
            default=str,
        )

    def series_uid(self, kind: str) -> str:
        """Series Instance UID of the ``kind`` ("pm" or "sc") series."""
        return derived_uid(self.text(), kind, "series")

    def instance_uid(self, kind: str, *source: str) -> str:
        """SOP Instance UID of one object of the ``kind`` series, made from its source refs."""
        return derived_uid(self.text(), kind, "instance", *source)

    def series_number(self, kind: str) -> int:
        """A stable Series Number in 1000-9999, so outputs sort after most acquired series."""
        digest = hashlib.sha256(f"{self.text()}|{kind}".encode()).hexdigest()
        return 1000 + int(digest, 16) % 9000
