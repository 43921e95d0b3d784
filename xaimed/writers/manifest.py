"""The run manifest: one row per case, method and target.

``status`` is ``ok``, ``failed`` (``error_type`` and ``error`` say why), ``interrupted`` (a
SIGTERM/SIGINT stopped the run first), ``not_run`` (``--fail-fast`` stopped it) or ``pending``
(not done yet: the run is going on, or was killed). ``case_index`` is the case's place in the
unsharded case order. ``resumed`` is
``yes`` where the work was done by an earlier run and skipped by this one.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from xaimed.io.safety import escape_text
from xaimed.writers.atomic import atomic_path

COLUMNS = [
    "case_id", "case_index", "source", "label", "method", "target", "status", "error_type",
    "error", "nifti", "sidecar", "png", "wall_s", "predicted_class", "probability",
    "forward_passes", "backward_passes", "peak_host_mib", "peak_device_mib", "resumed",
    "warning", "series_uid", "dicom_pm", "dicom_sc",
]  # fmt: skip
# Columns that differ between two runs of the same work (compare manifests without them).
TIMING_COLUMNS = ("wall_s", "peak_host_mib", "peak_device_mib", "resumed")


def write_manifest(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write the manifest CSV; called after every case so that a crash keeps what was done."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in COLUMNS})
    return path


def _cell(value: Any) -> Any:
    # A file name that is not UTF-8 is kept with its bytes escaped (\xff), not dropped.
    if value is None:
        return ""
    return escape_text(value) if isinstance(value, str) else value
