"""The run manifest: one row per case, method and target."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from xaimed.writers.atomic import atomic_path

COLUMNS = [
    "case_id", "source", "method", "target", "status", "error", "nifti", "sidecar", "png",
    "wall_s", "predicted_class", "probability", "forward_passes", "backward_passes", "warning",
    "series_uid", "dicom_pm", "dicom_sc",
]  # fmt: skip


def write_manifest(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write the manifest CSV; called after every case so that a crash keeps what was done."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})
    return path
