"""`xaimed evaluate` opens each case as `xaimed explain` did: a case list's mask column and a
DICOM study named by a case list (both were lost when evaluate rebuilt the case from the
manifest's source path)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import TESTS, blob_volume, oblique_affine, tiny_config, write_nifti
from dicom_helpers import write_study
from seg_models import TinySeg

from xaimed.config import load_config
from xaimed.evaluate.runner import evaluate
from xaimed.evaluate.session import build_scorer, case_of_run, open_case, reexplain
from xaimed.model import load_model
from xaimed.pipeline import explain
from xaimed.writers.manifest import read_manifest


def _manifest(run: Path) -> list[dict[str, str]]:
    return read_manifest(run / "manifest.csv")  # output paths resolved against the run


def _reexplained_equals_stored(run: Path, config_path: Path) -> None:
    """Every stored map is what re-explaining its case along evaluate's path gives."""
    config = load_config(config_path)
    loaded = load_model(config.model, torch.device("cpu"))
    scorer = build_scorer(loaded.module, config, is_script=False)
    rows = [r for r in _manifest(run) if r["status"] == "ok" and r["target"] != "dominant"]
    assert rows
    for row in rows:
        case = open_case(case_of_run(row), config, scorer, loaded.device)
        entry = next(e for e in config.methods if e.output_id == row["method"])
        target = json.loads(Path(row["sidecar"]).read_text())["target"]["index"]
        stored = np.asarray(nib.load(row["nifti"]).get_fdata(dtype=np.float32))
        again = reexplain(scorer, case, entry, target, config)
        np.testing.assert_allclose(again, stored, rtol=1e-5, atol=1e-6 * np.abs(stored).max())


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory) -> Path:
    """A segmentation target over a region that the case list's mask column sets per case,
    different from the config's target.mask."""
    tmp = tmp_path_factory.mktemp("masked")
    torch.manual_seed(0)
    torch.save(TinySeg().state_dict(), tmp / "seg.pt")
    affine = oblique_affine((2.0, 2.0, 2.0), "RAS", angle=0.0)
    shape = (16, 16, 16)
    write_nifti(tmp / "images" / "s1.nii.gz", blob_volume(shape, (8, 8, 8)), affine)
    listed, configured = np.zeros(shape), np.zeros(shape)
    listed[6:10, 6:10, 6:10] = 1
    configured[0:4, 0:4, 0:4] = 1
    write_nifti(tmp / "masks" / "s1_listed.nii.gz", listed, affine)
    write_nifti(tmp / "masks" / "s1_config.nii.gz", configured, affine)
    (tmp / "cases.csv").write_text(
        "case_id,path,mask\ns1,images/s1.nii.gz,masks/s1_listed.nii.gz\n"
    )
    config = {
        "model": {
            "architecture": "seg_models:TinySeg",
            "python_path": [str(TESTS)],
            "weights": str(tmp / "seg.pt"),
            "classes": ["background", "lesion"],
        },
        "preprocessing": {"intensity": {"kind": "zscore"}},
        "target": {"class": "lesion", "region": "mask", "mask": "masks/{case_id}_config.nii.gz"},
        "methods": ["saliency", {"name": "integrated_gradients", "params": {"steps": 4}}],
        "outputs": {"png": False},
        "runtime": {"device": "cpu", "threads": 1},
        "evaluate": {"faithfulness": {"steps": 4}},
    }
    (tmp / "run.yaml").write_text(json.dumps(config))
    result = explain(tmp / "cases.csv", tmp / "run.yaml", tmp / "run")
    assert result.failed == []
    return tmp


def test_the_map_of_a_listed_mask_covers_that_mask(masked_run):
    # The explain side of the case list's mask: the region it names, not target.mask's.
    sidecar = json.loads((masked_run / "run" / "s1" / "s1_saliency.json").read_text())
    assert sidecar["source"]["mask"] == str(masked_run / "masks" / "s1_listed.nii.gz")
    assert sidecar["target"]["segmentation"]["region_voxels"] == [64, 64]


def test_evaluate_reexplains_with_the_case_lists_mask(masked_run):
    # With target.mask's region (the bug) re-explaining gives another map than the stored one.
    _reexplained_equals_stored(masked_run / "run", masked_run / "run.yaml")


def test_evaluate_of_a_case_list_with_masks_runs_every_case(masked_run, tmp_path):
    result = evaluate(masked_run / "run", out_dir=tmp_path, metrics=["faithfulness"])
    assert result.failures == []
    assert set(result.values("deletion_auc")) == {"s1"}


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory, tiny_state) -> Path:
    """A DICOM study explained from a case list, under the list's id (not the study's hash)."""
    tmp = tmp_path_factory.mktemp("listed-dicom")
    write_study(tmp / "export" / "study", seed="listed-one", shape=(16, 14, 10))
    (tmp / "cases.csv").write_text("case_id,path,label\npatient1,export/study,yes\n")
    config = tiny_config(tiny_state, methods=["saliency"], evaluate={"faithfulness": {"steps": 4}})
    (tmp / "run.yaml").write_text(json.dumps(config))
    result = explain(tmp / "cases.csv", tmp / "run.yaml", tmp / "run")
    assert result.failed == [] and result.rows[0]["case_id"] == "patient1"
    return tmp


def test_evaluate_a_dicom_case_from_a_case_list(dicom_run, tmp_path):
    result = evaluate(dicom_run / "run", out_dir=tmp_path, metrics=["faithfulness"])
    assert result.failures == []
    assert set(result.values("deletion_auc")) == {"patient1"}


def test_a_dicom_case_from_a_case_list_reexplains_to_its_stored_map(dicom_run):
    _reexplained_equals_stored(dicom_run / "run", dicom_run / "run.yaml")
