"""``xaimed explain`` on DICOM studies end to end: outputs, manifest, repeatability, the sample."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import ROOT, write_nifti
from dicom_helpers import blob_source, dciodvfy_errors, write_study
from test_dicom_write import pm_values_in_source_order
from typer.testing import CliRunner

from xaimed.cli import app
from xaimed.io.dicom import map_on_source_planes, scan_dicom
from xaimed.writers.manifest import read_manifest

runner = CliRunner()


def _explain(input_path: Path, config: Path, out: Path) -> list[dict[str, str]]:
    args = ["explain", str(input_path), "-c", str(config), "-o", str(out), "-q"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code in (0, 1), result.stdout + (result.stderr or "")
    return read_manifest(out / "manifest.csv")


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    write_study(folder / "p1" / "s1", seed="patient-one", shape=(16, 14, 10))
    write_study(folder / "p2", seed="patient-two", shape=(12, 12, 8), axcodes="RAS")
    write_nifti(folder / "extra.nii.gz", blob_source(shape=(10, 10, 10)).array, np.eye(4))
    return folder


def test_explain_dicom_studies_writes_every_output(tmp_path, studies, make_config):
    config = make_config(methods=["saliency", "input_x_gradient"], outputs={"png": True})
    rows = _explain(studies, config, tmp_path / "out")
    assert [(r["status"], r["method"]) for r in rows] == [
        ("ok", "saliency"),
        ("ok", "input_x_gradient"),
    ] * 3
    assert rows[0]["case_id"] == "extra" and rows[0]["series_uid"] == rows[0]["dicom_pm"] == ""
    dicom_rows = rows[2:]
    by_study = {s.case_id: s for s in scan_dicom(studies)}
    for row in dicom_rows:
        study = by_study[row["case_id"]]
        assert row["series_uid"] == study.series[0].series_uid
        # Names from hashes and methods only: no patient data anywhere in paths.
        for key in ("nifti", "sidecar", "png", "dicom_pm", "dicom_sc"):
            assert "PID" not in row[key] and "Doe" not in row[key]
            assert Path(row[key]).exists()
        # The NIfTI carries the source's RAS affine and equals the Parametric Map.
        source = _read_study(study)
        nifti = nib.load(row["nifti"])
        np.testing.assert_allclose(nifti.affine, source.affine, atol=1e-5)
        assert nifti.header.get_sform(coded=True)[1] == 1
        heatmap = source.with_array(np.asarray(nifti.dataobj, dtype=np.float32))
        pm_values = pm_values_in_source_order(Path(row["dicom_pm"]), source)
        np.testing.assert_allclose(pm_values, map_on_source_planes(heatmap), atol=1e-6)
        assert dciodvfy_errors(Path(row["dicom_pm"])) == []
        scs = sorted(Path(row["dicom_sc"]).iterdir())
        assert len(scs) == source.spatial_shape[2]
        assert all(dciodvfy_errors(path) == [] for path in scs)
        sidecar = json.loads(Path(row["sidecar"]).read_text())
        assert sidecar["source"]["dicom"]["series_instance_uid"] == row["series_uid"]
        # The sidecar names what was written, with the UIDs in the files.
        pm = pydicom.dcmread(row["dicom_pm"])
        written = sidecar["dicom_outputs"]
        here = Path(row["sidecar"]).parent
        assert here / written["parametric_map"]["path"] == Path(row["dicom_pm"])
        assert written["parametric_map"]["sop_instance_uid"] == pm.SOPInstanceUID
        assert written["parametric_map"]["series_instance_uid"] == pm.SeriesInstanceUID
        assert written["parametric_map"]["sop_class_uid"] == pm.SOPClassUID
        assert written["parametric_map"]["content_description"] == pm.ContentDescription
        assert here / written["secondary_capture"]["path"] == Path(row["dicom_sc"])
        sc_files = [pydicom.dcmread(p) for p in scs]
        assert written["secondary_capture"]["sop_instance_uids"] == [
            ds.SOPInstanceUID for ds in sc_files
        ]
        assert {ds.SeriesInstanceUID for ds in sc_files} == {
            written["secondary_capture"]["series_instance_uid"]
        }
        assert sidecar["software"]["pydicom"] == pydicom.__version__
        assert sidecar["software"]["highdicom"] == hd.__version__
        # Composed to fit the 64 characters of an LO, not cut mid-word.
        composed = f"{row['method']} attribution map for output '{row['target']}'"
        assert pm.ContentDescription in (f"{composed}; research use only", composed)
    # One new series per method and object type.
    series = {pydicom.dcmread(r["dicom_pm"]).SeriesInstanceUID for r in dicom_rows}
    series |= {
        pydicom.dcmread(next(Path(r["dicom_sc"]).iterdir())).SeriesInstanceUID for r in dicom_rows
    }
    assert len(series) == 2 * len(dicom_rows)


def _read_study(study):
    from xaimed.config import DicomSection
    from xaimed.io.dicom.select import read_study

    return read_study(study, DicomSection(), case_id=study.case_id)


def test_rerun_gives_identical_uids_and_pixels_and_skips_its_own_outputs(
    tmp_path, studies, make_config
):
    # No NIfTI: a NIfTI map inside the input folder would be a case of its own on the rerun.
    config = make_config(outputs={"png": False, "nifti": False})
    first = _explain(studies / "p1", config, studies / "p1" / "results")
    # The outputs now inside the input folder are recognised as ours and skipped.
    second = _explain(studies / "p1", config, tmp_path / "b")
    assert len(first) == len(second) == 1, (first, second)
    assert first[0]["series_uid"] == second[0]["series_uid"]
    a, b = pydicom.dcmread(first[0]["dicom_pm"]), pydicom.dcmread(second[0]["dicom_pm"])
    assert (a.SOPInstanceUID, a.SeriesInstanceUID) == (b.SOPInstanceUID, b.SeriesInstanceUID)
    assert a.FloatPixelData == b.FloatPixelData
    sc_a = sorted(Path(first[0]["dicom_sc"]).iterdir())
    sc_b = sorted(Path(second[0]["dicom_sc"]).iterdir())
    assert len(sc_a) == len(sc_b) == 10
    for x, y in zip(sc_a, sc_b, strict=True):
        dx, dy = pydicom.dcmread(x), pydicom.dcmread(y)
        assert (dx.SOPInstanceUID, dx.PixelData) == (dy.SOPInstanceUID, dy.PixelData)


def test_outputs_flags_and_bad_series_in_the_manifest(tmp_path, studies, make_config):
    files = sorted((studies / "p1" / "s1").iterdir())
    files[4].unlink()  # a gap
    config = make_config(outputs={"png": False, "parametric_map": False, "nifti": False})
    rows = _explain(studies, config, tmp_path / "out")
    by_case = {r["case_id"]: r for r in rows}
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and "slice spacing is inconsistent" in failed[0]["error"]
    assert "set dicom.resample_irregular: true" in failed[0]["error"]
    ok = [r for r in by_case.values() if r["status"] == "ok" and r["case_id"] != "extra"]
    assert ok and ok[0]["dicom_pm"] == "" and Path(ok[0]["dicom_sc"]).is_dir()
    config = make_config(dicom={"resample_irregular": True}, outputs={"png": False})
    rows = _explain(studies / "p1", config, tmp_path / "resampled")
    assert rows[0]["status"] == "ok"
    sidecar = json.loads(Path(rows[0]["sidecar"]).read_text())
    assert any("resampled onto 10 slices" in w for w in sidecar["warnings"])
    assert len(list(Path(rows[0]["dicom_sc"]).iterdir())) == 9  # one per source slice


def test_invalid_dicom_config_is_reported(tmp_path, make_config):
    config = make_config(dicom={"select": {"descripton": "T1"}, "min_slices": 0})
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 2
    text = " ".join((result.stdout + (result.stderr or "")).split())
    assert "dicom.select.descripton: unknown key 'descripton'; did you mean 'description'?" in text
    assert "dicom.min_slices" in text


def test_sample_dicom_export_is_deterministic_and_explains(tmp_path, make_config):
    import importlib.util

    import yaml

    spec = importlib.util.spec_from_file_location(
        "make_sample_dicom", ROOT / "scripts" / "make_sample_dicom.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path / "dicom")
    committed = sorted(p for p in (ROOT / "sample_data" / "dicom").rglob("*") if p.is_file())
    again = sorted(p for p in (tmp_path / "dicom").rglob("*") if p.is_file())
    assert [p.relative_to(tmp_path / "dicom") for p in again] == [
        p.relative_to(ROOT / "sample_data" / "dicom") for p in committed
    ]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(again, committed, strict=True))
    # The README's command with the sample config's preprocessing (the tiny test model stands
    # in for the trained sample model, which the next test uses when it is present).
    sample = yaml.safe_load((ROOT / "configs" / "sample.yaml").read_text())
    tiny = yaml.safe_load(make_config().read_text())
    config = make_config(
        preprocessing=sample["preprocessing"], model={**tiny["model"], "input_size": [48, 48, 48]}
    )
    rows = _explain(ROOT / "sample_data" / "dicom", config, tmp_path / "out")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for row in rows:
        nifti = nib.load(row["nifti"])
        study = next(
            s for s in scan_dicom(ROOT / "sample_data" / "dicom") if s.case_id == row["case_id"]
        )
        np.testing.assert_allclose(nifti.affine, _read_study(study).affine, atol=1e-5)
        written = [Path(row["dicom_pm"]), *sorted(Path(row["dicom_sc"]).iterdir())]
        assert [e for path in written for e in dciodvfy_errors(path)] == []


SAMPLE_WEIGHTS = ROOT / "xaimed" / "sample" / "sample_cnn_state.pt"


@pytest.mark.skipif(not SAMPLE_WEIGHTS.is_file(), reason="sample model weights not trained yet")
def test_readme_sample_dicom_command(tmp_path):
    """The README's DICOM example (one method, no PNG, to stay fast)."""
    config = tmp_path / "sample.yaml"
    text = (ROOT / "configs" / "sample.yaml").read_text()
    config.write_text(text.replace("../xaimed/", f"{ROOT}/xaimed/"))
    args = ["explain", str(ROOT / "sample_data" / "dicom"), "-c", str(config)]
    args += ["-o", str(tmp_path / "out"), "-m", "saliency", "--device", "cpu", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stdout + (result.stderr or "")
    rows = read_manifest(tmp_path / "out" / "manifest.csv")
    assert len(rows) == 2 and all(r["status"] == "ok" and r["dicom_pm"] for r in rows)
