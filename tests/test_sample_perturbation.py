"""Perturbation methods on the committed sample study: the lesion carries the attribution."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT

from xaimed.config import MethodEntry, load_config, updated
from xaimed.pipeline import explain
from xaimed.progress import LogReporter

SAMPLE = ROOT / "sample_data"
SAMPLE_WEIGHTS = ROOT / "xaimed" / "sample" / "sample_cnn_state.pt"

# The trained sample model is committed separately; until it is, there is nothing to explain.
pytestmark = pytest.mark.skipif(
    not SAMPLE_WEIGHTS.is_file(), reason="sample model weights not trained yet"
)


def _lesion_cases() -> list[str]:
    with (SAMPLE / "labels.csv").open() as fh:
        return sorted(row["case_id"] for row in csv.DictReader(fh) if row["label"] == "1")


@pytest.fixture(scope="module")
def perturbation_run(tmp_path_factory):
    """One explain run of occlusion and grid feature ablation over the three lesion cases."""
    images = tmp_path_factory.mktemp("lesion_cases")
    for case_id in _lesion_cases():
        (images / f"{case_id}.nii.gz").symlink_to(SAMPLE / "images" / f"{case_id}.nii.gz")
    config = load_config(ROOT / "configs" / "sample.yaml")
    occlusion = next(m for m in config.methods if m.name == "occlusion")
    methods = [
        occlusion,
        # `--method occlusion` at its defaults (window 8, stride 4, the default fill); the
        # incremental engine gives the plain engine's map (tests/test_incremental.py), faster.
        MethodEntry(name="occlusion", id="occlusion_defaults", params={"engine": "auto"}),
        MethodEntry(
            name="feature_ablation",
            params={
                "grouping": {"kind": "grid", "size": 6},
                "baseline": {"kind": "blur", "sigma_mm": 8},
            },
        ),
    ]
    config = updated(
        config, {"runtime": {"device": "cpu"}, "outputs": {"png": False}, "methods": methods}
    )
    out = tmp_path_factory.mktemp("sample_perturbation")
    return explain(images, config, out, reporter=LogReporter())


@pytest.mark.parametrize("method", ["occlusion", "occlusion_defaults", "feature_ablation"])
def test_grid_perturbations_concentrate_on_the_lesion(perturbation_run, method):
    rows = [r for r in perturbation_run.rows if r["method"] == method]
    assert [r["case_id"] for r in rows] == _lesion_cases()
    for row in rows:
        assert row["status"] == "ok", row.get("error")
        attribution = nib.load(row["nifti"]).get_fdata()
        mask_path = SAMPLE / "masks" / f"{row['case_id']}_lesion.nii.gz"
        mask = np.asarray(nib.load(mask_path).dataobj) > 0
        inside = np.abs(attribution[mask]).mean()
        outside = np.abs(attribution[~mask]).mean()
        assert inside / outside >= 3, f"{row['case_id']} {method}: ratio {inside / outside:.2f}"
        assert attribution[mask].mean() > 0  # removing the lesion lowers the lesion score


def test_default_fill_is_recorded_in_the_sidecar(perturbation_run):
    row = next(r for r in perturbation_run.rows if r["method"] == "occlusion_defaults")
    sidecar = json.loads(Path(row["sidecar"]).read_text())
    blur = {"kind": "blur", "sigma_mm": 8.0}
    assert sidecar["method"]["params"]["baseline"] == blur
    assert sidecar["method_details"]["baseline"] == blur
