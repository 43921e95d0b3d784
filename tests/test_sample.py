"""The committed sample study and model: correct predictions, maps that find the lesion."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT

import xaimed
from xaimed.config import updated
from xaimed.pipeline import RunResult
from xaimed.progress import LogReporter

SAMPLE = ROOT / "sample_data"
# Methods checked on the sample study, with the least attribution per voxel inside the lesion
# relative to outside that each must reach.
LESION_RATIO = {"integrated_gradients": 5, "grad_cam": 3, "grad_cam_pp": 3, "lrp": 3}
METHODS = list(LESION_RATIO)


def _labels() -> dict[str, dict[str, str]]:
    with (SAMPLE / "labels.csv").open() as fh:
        return {row["case_id"]: row for row in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory) -> RunResult:
    config = xaimed.load_config(ROOT / "configs" / "sample.yaml")
    config = updated(config, {"runtime": {"device": "cpu"}, "outputs": {"png": False}})
    out = tmp_path_factory.mktemp("sample")
    return xaimed.explain(SAMPLE / "images", config, out, methods=METHODS, reporter=LogReporter())


def test_sample_model_classifies_every_committed_case(sample_run):
    labels = _labels()
    rows = [r for r in sample_run.rows if r["method"] == "integrated_gradients"]
    assert sorted(r["case_id"] for r in rows) == sorted(labels)
    for row in sample_run.rows:
        assert row["status"] == "ok", row["error"]
        assert row["predicted_class"] == labels[row["case_id"]]["label_name"], row["case_id"]


def test_every_map_has_its_source_geometry(sample_run):
    axcodes = set()
    for row in sample_run.rows:
        src, out = nib.load(row["source"]), nib.load(row["nifti"])
        assert out.shape == src.shape
        np.testing.assert_array_equal(out.affine, src.affine)
        np.testing.assert_array_equal(out.header.get_sform(), src.header.get_sform())
        np.testing.assert_allclose(out.header.get_qform(), src.header.get_qform(), atol=1e-6)
        assert int(out.header["qform_code"]) == int(src.header["qform_code"])
        assert int(out.header["sform_code"]) == int(src.header["sform_code"])
        axcodes.add("".join(nib.aff2axcodes(src.affine)))
    assert {"RAS", "LPS", "LAS"} <= axcodes  # the sample covers non-RAS sources


@pytest.mark.parametrize("method", METHODS)
def test_maps_concentrate_on_the_lesion(sample_run, method):
    labels = _labels()
    lesion_rows = [
        r for r in sample_run.rows
        if labels[r["case_id"]]["label"] == "1" and r["method"] == method
    ]  # fmt: skip
    assert len(lesion_rows) == 3
    for row in lesion_rows:
        attribution = nib.load(row["nifti"]).get_fdata()
        mask_path = SAMPLE / "masks" / f"{row['case_id']}_lesion.nii.gz"
        mask = np.asarray(nib.load(mask_path).dataobj) > 0
        assert mask.shape == attribution.shape and mask.any()
        inside = np.abs(attribution[mask]).mean()
        outside = np.abs(attribution[~mask]).mean()
        ratio = inside / outside
        assert ratio >= LESION_RATIO[method], f"{row['case_id']} {method}: ratio {ratio:.2f}"
        assert attribution[mask].mean() > 0  # the lesion is evidence *for* the lesion class
