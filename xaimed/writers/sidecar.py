"""The JSON sidecar: everything needed to audit a map later."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from xaimed.errors import OutputError
from xaimed.io.safety import escape_text
from xaimed.writers.atomic import atomic_path
from xaimed.writers.base import MapOutput


def write_sidecar(record: dict[str, Any], path: Path) -> Path:
    """Write ``record`` as indented, strict JSON (keys in insertion order).

    Strict: no ``NaN`` or ``Infinity`` tokens, which most JSON parsers refuse (a non-finite
    number is an OutputError naming its field), and file names that are not UTF-8 written with
    their bytes escaped (``\\xff``) rather than as lone surrogates.
    """
    clean = _strict(record, "")
    with atomic_path(path) as tmp:
        text = json.dumps(clean, indent=2, default=str, allow_nan=False)
        tmp.write_text(text + "\n", encoding="utf-8")
    return path


def _strict(value: Any, key: str) -> Any:
    if isinstance(value, np.floating):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise OutputError(
            f"sidecar field {key.lstrip('.')} is {value}, which JSON cannot hold; the case's "
            "arithmetic overflowed (check the image's values and preprocessing)."
        )
    if isinstance(value, str):
        return escape_text(value)
    if isinstance(value, Path):
        return escape_text(str(value))
    if isinstance(value, dict):
        return {escape_text(str(k)): _strict(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


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
