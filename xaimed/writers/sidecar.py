"""The JSON sidecar: everything needed to audit a map later."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xaimed.writers.atomic import atomic_path
from xaimed.writers.base import MapOutput


def write_sidecar(record: dict[str, Any], path: Path) -> Path:
    """Write ``record`` as indented JSON (keys in insertion order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return path


class SidecarWriter:
    """The JSON sidecar of the map (always written: it is the map's audit record)."""

    name = "sidecar"
    columns = ("sidecar",)

    def wanted(self, out: MapOutput) -> bool:
        """Always."""
        return True

    def write(self, out: MapOutput) -> dict[str, str]:
        """``<stem>.json``."""
        return {"sidecar": str(write_sidecar(out.sidecar, out.case_dir / f"{out.stem}.json"))}
