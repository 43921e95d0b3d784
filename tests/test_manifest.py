"""The manifest's typed rows: the column list, unknown keys refused, cells as the CSV shows them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from xaimed.errors import InputError
from xaimed.io.case import Case
from xaimed.writers.manifest import COLUMNS, ManifestRow, case_row, read_manifest, write_manifest


def test_the_columns_are_the_rows_keys_in_the_manifests_order():
    assert COLUMNS == (
        "case_id", "case_index", "source", "label", "method", "target", "status", "error_type",
        "error", "nifti", "sidecar", "png", "wall_s", "predicted_class", "probability",
        "forward_passes", "backward_passes", "peak_host_mib", "peak_device_mib", "resumed",
        "warning", "series_uid", "dicom_pm", "dicom_sc", "stored",
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


def test_rows_read_back_typed_numbers_and_text(tmp_path):
    case = Case("c1", Path("/data/c1.nii.gz"), label="lesion")
    row = case_row(case, "saliency", status="ok", wall_s=1.5, forward_passes=7, case_index=3)
    row["nifti"] = str(tmp_path / "c1" / "c1_saliency.nii.gz")
    path = write_manifest([row], tmp_path / "manifest.csv")
    (read,) = read_manifest(path)
    assert read["case_index"] == 3 and isinstance(read["case_index"], int)
    assert read["wall_s"] == 1.5 and read["forward_passes"] == 7
    assert read["probability"] is None and read["error"] == "" and read["label"] == "lesion"
    assert read["nifti"] == str(tmp_path / "c1" / "c1_saliency.nii.gz")  # resolved again


def test_a_damaged_number_cell_is_one_sentence_naming_file_line_and_column(tmp_path):
    path = write_manifest([case_row(Case("c1", Path("c1.nii.gz")), "saliency", wall_s=2.0)],
                          tmp_path / "manifest.csv")  # fmt: skip
    path.write_text(path.read_text().replace(",2.0,", ",two,"))
    with pytest.raises(InputError) as err:
        read_manifest(path)
    assert str(err.value) == (
        f"{path}, line 2: column wall_s holds 'two', not a number; the manifest was edited or "
        "damaged, so run `xaimed explain` again into this folder to rewrite it."
    )
