"""The manifest's typed rows: the column list, unknown keys refused, cells as the CSV shows them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from xaimed.io.case import Case
from xaimed.writers.manifest import COLUMNS, ManifestRow, case_row, write_manifest


def test_the_columns_are_the_rows_keys_in_the_manifests_order():
    assert COLUMNS == (
        "case_id", "case_index", "source", "label", "method", "target", "status", "error_type",
        "error", "nifti", "sidecar", "png", "wall_s", "predicted_class", "probability",
        "forward_passes", "backward_passes", "peak_host_mib", "peak_device_mib", "resumed",
        "warning", "series_uid", "dicom_pm", "dicom_sc", "stored", "channel_shares",
        "top_channel",
    )  # fmt: skip


def test_a_row_is_written_under_its_columns_with_empty_cells_for_the_rest(tmp_path):
    case = Case("c1", Path("/data/c1.nii.gz"), label="lesion")
    row = case_row(case, "saliency", status="ok", wall_s=1.5) | ManifestRow(case_index=3)
    path = write_manifest([row], tmp_path / "manifest.csv")
    with path.open(newline="") as fh:
        (written,) = list(csv.DictReader(fh))
    assert list(written) == list(COLUMNS)
    assert written["case_id"] == "c1" and written["source"] == "/data/c1.nii.gz"
    assert written["label"] == "lesion" and written["case_index"] == "3"
    assert written["wall_s"] == "1.5" and written["nifti"] == ""


def test_an_unknown_key_is_an_error_not_a_silently_dropped_column(tmp_path):
    case = Case("c1", Path("c1.nii.gz"))
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['wall_time'\]"):
        case_row(case, "saliency", wall_time=1.0)
    row = case_row(case, "saliency") | {"_heatmap": object()}
    with pytest.raises(ValueError, match="_heatmap"):
        write_manifest([row], tmp_path / "manifest.csv")  # type: ignore[list-item]
    assert not (tmp_path / "manifest.csv").exists()
