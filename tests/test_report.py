"""The HTML report's files: what it shows, its volumes' geometry and values, privacy, the hooks
of explain / merge / evaluate, and bad input. The pages in a real browser: test_report_browser."""

from __future__ import annotations

import base64
import csv
import gzip
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from report_fixtures import sample_config, sample_run_fixture, xaimed  # noqa: F401

from xaimed.errors import InputError
from xaimed.report import build_report
from xaimed.writers.manifest import read_manifest


def read_script(path: Path) -> object:
    """The JSON value a data script hands to the page."""
    text = path.read_text(encoding="utf-8")
    match = re.fullmatch(r"XAIMED_REPORT\.\w+\((.*)\);\n", text, flags=re.S)
    assert match, path
    return json.loads(match[1])


def read_volume(path: Path) -> nib.Nifti1Image:
    """The NIfTI inside a viewer volume script."""
    text = path.read_text(encoding="ascii")
    match = re.fullmatch(r'XAIMED_REPORT\.volume\("[^"]+","([A-Za-z0-9+/=]+)"\);\n', text)
    assert match, path
    return nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(match[1])))


def manifest(run: Path) -> list[dict[str, str]]:
    return read_manifest(run / "manifest.csv")


def test_explain_and_evaluate_write_the_report(sample_run: Path) -> None:
    report = sample_run / "report"
    assert (report / "index.html").is_file() and (report / "case.html").is_file()
    index = read_script(report / "data" / "index.js")
    assert [row[0] for row in index["cases"]] == ["broken", "case01", "case03"]
    assert [c["key"] for c in index["columns"]] == ["integrated_gradients", "grad_cam"]
    summary = index["summary"]
    assert summary["states"] == {"failed": 1, "ok": 2}
    assert summary["model"] == "SampleCNN" and len(summary["model_sha256"]) == 64
    assert len(summary["config_sha256"]) == 64
    rows = manifest(sample_run)
    assert summary["compute_s"] == pytest.approx(
        sum(float(r["wall_s"] or 0) for r in rows), abs=0.1
    )
    # The failed case: its one-sentence reason, per method.
    failures = index["failures"]
    assert {f["case_id"] for f in failures} == {"broken"} and len(failures) == 2
    assert all(f["type"] == "InputError" for f in failures)
    # Named as "<source>": the file's path is an identifier (report.identifiers is false).
    assert failures[0]["error"].startswith("<source>: not a readable NIfTI file")
    # evaluate refreshed the report: metrics per cell, cohort means, curves on the case page.
    assert "pointing_game" in index["metrics"] and "deletion_auc" in index["metrics"]
    case01 = next(row for row in index["cases"] if row[0] == "case01")
    metrics = dict(zip(index["metrics"], case01[5][0][4], strict=True))
    with (sample_run / "metrics.csv").open(newline="") as fh:
        expected = {
            r["metric"]: float(r["value"])
            for r in csv.DictReader(fh)
            if r["case_id"] == "case01" and r["method"] == "integrated_gradients"
        }
    assert metrics["pointing_game"] == expected["pointing_game"]
    assert metrics["deletion_auc"] == pytest.approx(expected["deletion_auc"], rel=1e-4)
    assert {r["method"] for r in index["evaluation"]} == {"integrated_gradients", "grad_cam"}
    record = read_script(report / "data" / "cases" / "case01" / "case.js")
    curves = record["maps"][0]["curves"]
    assert set(curves) == {"deletion", "insertion"} and len(curves["deletion"]["x"]) == 6
    # Thumbnails are the run's own PNGs, inside the report folder.
    thumb = report / case01[5][0][1]
    assert (
        thumb.read_bytes()
        == (sample_run / "case01" / "case01_integrated_gradients.png").read_bytes()
    )


def test_viewer_volumes_keep_the_maps_geometry_and_values(sample_run: Path) -> None:
    record = read_script(sample_run / "report" / "data" / "cases" / "case03" / "case.js")
    source = nib.load(sample_run.parent / "images" / "case03.nii.gz")
    for entry in record["maps"]:
        original = nib.load(sample_run / "case03" / f"case03_{entry['method']}.nii.gz")
        info = entry["volume"]
        shown = read_volume(sample_run / "report" / info["file"])
        # LPS, 3.5 x 3.5 x 5 mm: the copy keeps the file's own voxel order and affine.
        np.testing.assert_allclose(shown.affine, original.affine, atol=1e-5)
        assert nib.aff2axcodes(shown.affine) == ("L", "P", "S")
        values = original.get_fdata()
        np.testing.assert_allclose(shown.get_fdata(), values, atol=info["step"] / 2 + 1e-9)
        assert info["step"] == pytest.approx(np.abs(values).max() / 32767)
        assert info["signed"] == (values.min() < 0 < values.max())
        peak = np.unravel_index(np.argmax(np.abs(values)), values.shape)
        np.testing.assert_allclose(info["peak_mm"], (original.affine @ [*peak, 1])[:3], atol=1e-3)
    image = read_volume(sample_run / "report" / record["source"]["file"])
    np.testing.assert_array_equal(image.get_fdata(), source.get_fdata())
    np.testing.assert_allclose(image.affine, source.affine, atol=1e-5)


def test_large_volumes_are_subsampled_and_recorded(sample_run: Path, tmp_path: Path) -> None:
    result = build_report(sample_run, tmp_path / "small", max_size=20)
    record = read_script(tmp_path / "small" / "data" / "cases" / "case01" / "case.js")
    info = record["maps"][0]["volume"]
    assert info["stride"] == 3 and info["shape"] == [48, 48, 48]
    shown = read_volume(tmp_path / "small" / info["file"])
    original = nib.load(sample_run / "case01" / "case01_integrated_gradients.nii.gz")
    assert shown.shape == (16, 16, 16)
    # Every kept voxel keeps its world position: voxel i of the copy is voxel 3i of the map.
    np.testing.assert_allclose(
        shown.affine @ [5, 7, 2, 1], original.affine @ [15, 21, 6, 1], atol=1e-5
    )
    np.testing.assert_allclose(
        shown.get_fdata(), original.get_fdata()[::3, ::3, ::3], atol=info["step"] / 2 + 1e-9
    )
    assert json.loads((tmp_path / "small" / "report.json").read_text())["max_size"] == 20
    assert result.bytes_total < build_report(sample_run, tmp_path / "full").bytes_total


def text_files(folder: Path) -> str:
    return "\n".join(
        p.read_text(encoding="utf-8", errors="replace")
        for p in folder.rglob("*")
        if p.suffix in {".js", ".json", ".html"} and "niivue" not in p.parts
    )


def test_no_identifiers_unless_asked(sample_run: Path, tmp_path: Path) -> None:
    images = str(sample_run.parent / "images")
    assert images in (sample_run / "manifest.csv").read_text()
    text = text_files(sample_run / "report")
    # Source paths (file and folder names often carry patient names or record numbers) and
    # anything under a patient / birth date / UID key are left out.
    assert images not in text and str(sample_run.parent) not in text
    assert not re.search(r'"[^"]*(patient|birth|uid)[^"]*"\s*:', text, flags=re.I)
    shown = build_report(sample_run, tmp_path / "with", identifiers=True)
    assert images in text_files(shown.index.parent)


def test_report_can_be_turned_off_and_written_later(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(Path(__file__).parent.parent / "sample_data" / "images" / "case02.nii.gz", images)
    config = sample_config(tmp_path, outputs={"report": False, "png": False})
    run = tmp_path / "run"
    done = xaimed("explain", str(images), "--config", str(config), "--out", str(run), "-q")
    assert done.returncode == 0, done.stderr
    assert not (run / "report").exists()
    done = xaimed("report", str(run), "--out", str(tmp_path / "shared"))
    assert done.returncode == 0, done.stderr
    assert "report of 1 case(s)" in done.stderr
    index = read_script(tmp_path / "shared" / "data" / "index.js")
    # No PNGs were written: the grid says so instead of showing a thumbnail.
    assert index["cases"][0][5][0][:2] == ["ok", ""]


def test_merge_writes_the_report_of_a_sharded_run(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for case in ("case02", "case04"):
        shutil.copy(
            Path(__file__).parent.parent / "sample_data" / "images" / f"{case}.nii.gz", images
        )
    config = sample_config(tmp_path, methods=[{"name": "saliency"}], outputs={"png": False})
    run = tmp_path / "run"
    for shard in ("0/2", "1/2"):
        args = ("explain", str(images), "--config", str(config), "--out", str(run), "-q")
        done = xaimed(*args, "--shard", shard)
        assert done.returncode == 0, done.stderr
        assert not (run / "report").exists()  # a shard has no whole manifest to report on
    done = xaimed("merge", str(run))
    assert done.returncode == 0, done.stderr
    index = read_script(run / "report" / "data" / "index.js")
    assert [row[0] for row in index["cases"]] == ["case02", "case04"]


def test_unreadable_files_are_left_out_with_one_sentence_each(
    sample_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(sample_run, run, ignore=shutil.ignore_patterns("report"))
    rows = manifest(run)
    for r in rows:
        for column in ("nifti", "sidecar", "png"):
            r[column] = r[column].replace(str(sample_run), str(run))
    case01 = [r for r in rows if r["case_id"] == "case01"]
    Path(case01[0]["sidecar"]).write_text("{not json")
    Path(case01[1]["nifti"]).write_bytes(b"\x1f\x8b broken")
    moved = tmp_path / "case03-moved.nii.gz"
    source03 = next(r["source"] for r in rows if r["case_id"] == "case03")
    with (run / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(
            {**r, "source": str(moved)} if r["case_id"] == "case03" else r for r in rows
        )
    assert Path(source03).is_file() and not moved.exists()
    result = build_report(run)
    notes = result.notes
    assert len(notes) == 3
    assert any(n.startswith("case case01: sidecar") and "not readable JSON" in n for n in notes)
    assert any(n.startswith("case case01: map") and "not a readable image file" in n for n in notes)
    assert any(n.startswith("case case03: source") and "does not exist" in n for n in notes)
    # The rest is there: case03's maps without the image under them, case01's readable map.
    record = read_script(run / "report" / "data" / "cases" / "case03" / "case.js")
    assert record["source"] is None and all(m["volume"] for m in record["maps"])
    record = read_script(run / "report" / "data" / "cases" / "case01" / "case.js")
    assert record["maps"][0]["volume"] and record["maps"][1]["volume"] is None
    index = read_script(run / "report" / "data" / "index.js")
    shown = [w["text"] for w in index["warnings"] if w["source"] == "report"]
    assert len(shown) == 3 and shown[:2] == notes[:2]
    # The missing source is named as such, not by its path (it may carry a patient's name).
    assert shown[2].startswith("case case03: source <source> (from the manifest) does not exist")


def test_report_command_names_a_missing_run(tmp_path: Path) -> None:
    done = xaimed("report", str(tmp_path / "nowhere"))
    assert done.returncode == 2
    message = f"{tmp_path / 'nowhere'}: no such run folder; give the folder `xaimed explain` wrote."
    assert done.stderr.strip().splitlines() == [f"error: {message}"]
    (tmp_path / "empty").mkdir()
    done = xaimed("report", str(tmp_path / "empty"))
    assert done.returncode == 2 and "no manifest.csv" in done.stderr


def test_report_never_replaces_a_folder_that_is_not_a_report(
    sample_run: Path, tmp_path: Path
) -> None:
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "thesis.txt").write_text("mine")
    with pytest.raises(InputError, match="exists and is not a report folder"):
        build_report(sample_run, tmp_path / "documents")
    assert (tmp_path / "documents" / "thesis.txt").read_text() == "mine"
    # A report folder is replaced, and a damaged record of its volumes only costs a rewrite.
    first = build_report(sample_run, tmp_path / "shared")
    (tmp_path / "shared" / "report.json").write_text("{damaged")
    again = build_report(sample_run, tmp_path / "shared")
    assert again.bytes_volumes == first.bytes_volumes and again.notes == first.notes


def test_dicom_study_shows_its_image_without_identifiers(tmp_path: Path) -> None:
    import pydicom

    study = tmp_path / "dicom" / "PAT01"
    shutil.copytree(Path(__file__).parent.parent / "sample_data" / "dicom" / "PAT01", study)
    first = next(p for p in sorted(study.rglob("*")) if p.is_file())
    header = pydicom.dcmread(first, stop_before_pixels=True)
    config = sample_config(tmp_path, methods=[{"name": "saliency"}], outputs={"png": False})
    run = tmp_path / "run"
    done = xaimed("explain", str(tmp_path / "dicom"), "--config", str(config), "--out", str(run))
    assert done.returncode == 0, done.stderr
    row = manifest(run)[0]
    record = read_script(run / "report" / "data" / "cases" / row["case_id"] / "case.js")
    # The series' voxels under the map, read as the run read them, on the map's grid.
    image = read_volume(run / "report" / record["source"]["file"])
    original = nib.load(row["nifti"])
    assert image.shape == original.shape
    np.testing.assert_allclose(image.affine, original.affine, atol=1e-4)
    assert np.ptp(image.get_fdata()) > 0
    text = text_files(run / "report")
    for value in (str(header.PatientName), header.PatientID, header.SeriesInstanceUID,
                  header.StudyInstanceUID, row["series_uid"], str(study)):  # fmt: skip
        assert value and value not in text


def test_dicom_study_from_a_case_list_shows_its_image(tmp_path: Path) -> None:
    # A case list names DICOM cases with ids of its own (not the study hash): the report finds
    # the study as the run did, so the image is under the map.
    study = tmp_path / "dicom" / "PAT01"
    shutil.copytree(Path(__file__).parent.parent / "sample_data" / "dicom" / "PAT01", study)
    cases = tmp_path / "cases.csv"
    cases.write_text("case_id,path\nmr-phantom,dicom/PAT01\n")
    config = sample_config(tmp_path, methods=[{"name": "saliency"}], outputs={"png": False})
    run = tmp_path / "run"
    done = xaimed("explain", str(cases), "--config", str(config), "--out", str(run))
    assert done.returncode == 0, done.stderr
    assert "no longer holds it" not in done.stderr
    row = manifest(run)[0]
    assert row["case_id"] == "mr-phantom"
    record = read_script(run / "report" / "data" / "cases" / "mr-phantom" / "case.js")
    image = read_volume(run / "report" / record["source"]["file"])
    assert image.shape == nib.load(row["nifti"]).shape
    assert np.ptp(image.get_fdata()) > 0
