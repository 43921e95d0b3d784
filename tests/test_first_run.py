"""The README's first command: the sample case list covers the NIfTI cases and DICOM studies."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import ROOT
from typer.testing import CliRunner

from xaimed.cli import app
from xaimed.io.caselist import read_case_list
from xaimed.writers.manifest import read_manifest

SAMPLE = ROOT / "sample_data"
COMMAND = (
    ".venv/bin/xaimed explain sample_data/cases.csv --config configs/sample.yaml --out runs/sample"
)


def test_readme_first_command_is_the_case_list():
    assert COMMAND in (ROOT / "README.md").read_text(encoding="utf-8")


def test_sample_case_list_holds_every_nifti_case_and_both_dicom_studies():
    cases = read_case_list(SAMPLE / "cases.csv")
    with (SAMPLE / "labels.csv").open() as fh:
        labels = {row["case_id"]: row["label_name"] for row in csv.DictReader(fh)}
    nifti = [c for c in cases if c.path.name.endswith(".nii.gz")]
    dicom = [c for c in cases if c.path.is_dir()]
    assert sorted(c.case_id for c in nifti) == sorted(labels)
    assert all(c.label == labels[c.case_id] for c in nifti)
    assert sorted(c.path.relative_to(SAMPLE / "dicom").as_posix() for c in dicom) == [
        "PAT01",
        "PAT02",
    ]
    assert all(c.mask is None or c.mask.is_file() for c in cases)
    assert sum(c.mask is not None for c in cases) == 4  # three lesion cases and case03's DICOM


def test_first_run_explains_nifti_and_dicom_in_one_command(tmp_path):
    """The README's first run with one fast method (the full run takes minutes)."""
    config = tmp_path / "sample.yaml"
    text = (ROOT / "configs" / "sample.yaml").read_text()
    config.write_text(text.replace("../xaimed/", f"{ROOT}/xaimed/"))
    out = tmp_path / "out"
    args = ["explain", str(SAMPLE / "cases.csv"), "-c", str(config), "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "-m", "saliency", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.stdout + (result.stderr or "")
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == 8 and all(r["status"] == "ok" and r["png"] for r in rows)
    dicom = [r for r in rows if r["dicom_pm"]]
    assert sorted(r["case_id"] for r in dicom) == ["dicom-case03", "dicom-case04"]
    for row in dicom:
        assert Path(row["dicom_pm"]).is_file() and any(Path(row["dicom_sc"]).iterdir())
        sidecar = json.loads(Path(row["sidecar"]).read_text())
        written = Path(row["sidecar"]).parent / sidecar["dicom_outputs"]["parametric_map"]["path"]
        assert written == Path(row["dicom_pm"])
    # case03 and its DICOM export are the same image: the same prediction.
    by_case = {r["case_id"]: r for r in rows}
    assert by_case["case03"]["predicted_class"] == by_case["dicom-case03"]["predicted_class"]
