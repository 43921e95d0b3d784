"""The 2D sample: radiograph phantoms explained by the bundled 2D CNN put the attribution on the
nodule, and the maps are 2D NIfTI on each film's geometry."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT

import xaimed
from xaimed.config import updated
from xaimed.pipeline import RunResult
from xaimed.progress import LogReporter
from xaimed.sample.radiograph import radiograph_phantom

SAMPLE = ROOT / "sample_data" / "radiographs"
# Least mean |attribution| per pixel inside the nodule relative to outside, per method.
NODULE_RATIO = {"saliency": 3.0, "occlusion": 3.0}


def _cases() -> dict[str, dict[str, str]]:
    with (SAMPLE / "cases.csv").open() as fh:
        return {row["case_id"]: row for row in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def radiograph_run(tmp_path_factory) -> RunResult:
    config = xaimed.load_config(ROOT / "configs" / "radiograph.yaml")
    config = updated(config, {"runtime": {"device": "cpu"}, "outputs": {"png": False}})
    out = tmp_path_factory.mktemp("radiographs")
    return xaimed.explain(
        SAMPLE / "cases.csv", config, out, methods=list(NODULE_RATIO), reporter=LogReporter()
    )


def test_the_phantom_is_deterministic_and_its_nodule_is_the_only_change():
    image, mask, spacing = radiograph_phantom(7, shape=(64, 80), pixel_spacing=(5.0, 4.5))
    again, mask_again, _ = radiograph_phantom(7, shape=(64, 80), pixel_spacing=(5.0, 4.5))
    healthy, no_mask, _ = radiograph_phantom(7, shape=(64, 80), pixel_spacing=(5.0, 4.5),
                                             lesion=False)  # fmt: skip
    assert image.shape == mask.shape == (64, 80) and spacing == (5.0, 4.5)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(mask, mask_again)
    assert mask.sum() > 0 and no_mask.sum() == 0
    # The nodule adds attenuation inside its mask; far from it the films are the same.
    assert (image - healthy)[mask > 0].mean() > 500
    rows, cols = np.nonzero(mask)
    far = np.ones(mask.shape, dtype=bool)
    far[max(rows.min() - 4, 0) : rows.max() + 5, max(cols.min() - 4, 0) : cols.max() + 5] = False
    np.testing.assert_allclose(image[far], healthy[far], atol=0.01)  # float rounding only


def test_the_2d_sample_model_classifies_every_film(radiograph_run):
    cases = _cases()
    assert sorted({r["case_id"] for r in radiograph_run.rows}) == sorted(cases)
    for row in radiograph_run.rows:
        assert row["status"] == "ok", row["error"]
        assert row["predicted_class"] == cases[row["case_id"]]["label"], row["case_id"]
        source, out = nib.load(row["source"]), nib.load(row["nifti"])
        assert out.shape == source.shape == (96, 96)
        np.testing.assert_allclose(out.affine, source.affine, atol=1e-6)


@pytest.mark.parametrize("method", list(NODULE_RATIO))
def test_maps_concentrate_on_the_nodule(radiograph_run, method):
    cases = _cases()
    rows = [r for r in radiograph_run.rows if r["method"] == method and cases[r["case_id"]]["mask"]]
    assert len(rows) == 2
    for row in rows:
        attribution = nib.load(row["nifti"]).get_fdata()
        mask = np.asarray(nib.load(SAMPLE / cases[row["case_id"]]["mask"]).dataobj) > 0
        assert mask.shape == attribution.shape and mask.any()
        ratio = np.abs(attribution[mask]).mean() / np.abs(attribution[~mask]).mean()
        assert ratio >= NODULE_RATIO[method], f"{row['case_id']} {method}: ratio {ratio:.2f}"
        assert attribution[mask].mean() > 0  # the nodule is evidence for the nodule class


def test_the_dicom_radiographs_give_the_nifti_films_maps_and_valid_dicom_outputs(
    radiograph_run, tmp_path
):
    """The CR (stored MONOCHROME1) and DX copies of two films explain exactly like the NIfTI
    films: same pixels for the model, so the same maps on the same grid up to the origin; their
    Parametric Maps and Secondary Captures are written in the source studies and are valid."""
    from dicom_helpers import dciodvfy_errors

    config = xaimed.load_config(ROOT / "configs" / "radiograph.yaml")
    config = updated(config, {"runtime": {"device": "cpu"}, "outputs": {"png": False}})
    result = xaimed.explain(
        SAMPLE / "dicom", config, tmp_path, methods=["saliency"], reporter=LogReporter()
    )
    assert len(result.rows) == 2 and all(r["status"] == "ok" for r in result.rows)
    nifti_maps = {
        r["case_id"]: nib.load(r["nifti"]) for r in radiograph_run.rows if r["method"] == "saliency"
    }
    for row in result.rows:
        sidecar = json.loads(Path(row["sidecar"]).read_text())
        film = "cxr01" if sidecar["source"]["dicom"]["modality"] == "CR" else "cxr02"
        mine, theirs = nib.load(row["nifti"]), nifti_maps[film]
        assert mine.shape == theirs.shape == (96, 96)
        np.testing.assert_allclose(mine.get_fdata(), theirs.get_fdata(), rtol=1e-5, atol=1e-7)
        # Same directions and spacing; the DICOM film's first pixel sits at the origin instead.
        np.testing.assert_allclose(mine.affine[:3, :3], theirs.affine[:3, :3], atol=1e-6)
        assert row["predicted_class"] == _cases()[film]["label"]
        for column in ("dicom_pm", "dicom_sc"):
            written = sorted(Path(row[column]).glob("*.dcm")) if Path(row[column]).is_dir() else [
                Path(row[column])]  # fmt: skip
            assert written and [e for p in written for e in dciodvfy_errors(p)] == []
    # The report shows each film under its map (a 2D DICOM image is read as a plane of depth 1,
    # its map is a 2D file: the report must not take that for a changed source).
    from xaimed.report import build_report

    assert build_report(tmp_path).notes == []
