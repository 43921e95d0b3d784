"""Segmentation outputs: a label's output reduced over a region, for every method family."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import TESTS, blob_volume, oblique_affine, write_nifti
from seg_models import TinySeg

from xaimed.config import PreprocessingSection, TargetSection, load_config, updated
from xaimed.engine.targets import TargetReduction
from xaimed.errors import InputError
from xaimed.methods import registry
from xaimed.methods.casefiles import CaseFiles
from xaimed.pipeline import explain
from xaimed.prediction import Target, predict
from xaimed.preprocess import prepare
from xaimed.volume import Source, Volume


class _TwoLabels(torch.nn.Module):
    """Label 0 scores x, label 1 scores 1 - x, per voxel: regions and sums known by hand."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, 1 - x], dim=1)


def _case(x: torch.Tensor) -> CaseFiles:
    volume = Volume(x[0, 0].numpy(), np.eye(4), Source(Path("c.nii.gz"), "nifti"))
    section = PreprocessingSection()
    return CaseFiles("c", prepare(volume, section), section)


def _reduction(**spec) -> TargetReduction:
    return TargetReduction(_TwoLabels(), TargetSection.model_validate(spec), output="logits")


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(1, 1, 6, 5, 4, generator=torch.Generator().manual_seed(0))


def test_predicted_region_sum_and_mean_of_logits(x):
    reduction = _reduction(region="predicted", reduction="sum")
    reduction.configure(x, _case(x))
    bright = x[0, 0] > 0.5
    scores = reduction(x)
    assert scores.shape == (1, 2)
    assert float(scores[0, 0]) == pytest.approx(float(x[0, 0][bright].sum()), rel=1e-6)
    assert float(scores[0, 1]) == pytest.approx(float((1 - x[0, 0])[~bright].sum()), rel=1e-6)
    assert reduction.sidecar_fields()["region_voxels"] == [int(bright.sum()), int((~bright).sum())]
    mean = _reduction(region="predicted", reduction="mean")
    mean.configure(x, _case(x))
    assert float(mean(x)[0, 0]) == pytest.approx(float(x[0, 0][bright].mean()), rel=1e-6)
    # The region is fixed on the unperturbed input: a perturbation changes the score only.
    moved = mean(torch.zeros_like(x))
    assert float(moved[0, 0]) == 0.0


def test_whole_volume_and_probabilities(x):
    reduction = _reduction(region="volume", reduction="mean", score="probabilities")
    reduction.configure(x, _case(x))
    probs = torch.softmax(torch.cat([x, 1 - x], dim=1), dim=1)
    torch.testing.assert_close(reduction(x), probs.mean(dim=(2, 3, 4)))


def test_classifier_outputs_pass_through(x):
    flat = TargetReduction(torch.nn.Flatten(), TargetSection(), output="logits")
    flat.configure(x, _case(x))
    assert not flat.segmentation and flat.sidecar_fields() is None
    torch.testing.assert_close(flat(x), x.flatten(1))


def test_predicted_label_skips_background_and_empty_regions_are_refused(x):
    reduction = _reduction(region="predicted")
    reduction.configure(x, _case(x))
    prediction = reduction.adjust(predict(reduction(x), output_kind="logits", classes=None))
    assert prediction.predicted == 1
    reduction.use(replace(reduction.case_regions, voxels=(0, 5)))
    with pytest.raises(InputError, match="region of label 0 is empty"):
        reduction.check([Target(0, "0")], "c")


@pytest.mark.parametrize("axcodes", ["LPS", "SIL"])
def test_label_maps_follow_the_image_through_the_grid_steps(axcodes):
    # An integer image resampled with order 0 is exactly what its label map must become.
    labels = np.random.default_rng(0).integers(1, 5, size=(20, 18, 14))
    volume = Volume(
        labels.astype(np.float32),
        oblique_affine((1.5, 2.0, 3.0), axcodes),
        Source(Path("c.nii.gz"), "nifti"),
    )
    section = PreprocessingSection.model_validate(
        {
            "reorient": "RAS",
            "resample": {"spacing": [2.5, 2.5, 2.5], "order": 0},
            "crop_pad": {"size": [12, 9, 20], "pad_value": 0},
        }
    )
    prepared = prepare(volume, section)
    on_grid = prepared.forward_labels(labels)
    np.testing.assert_array_equal(on_grid, prepared.array[0].astype(np.int64))
    assert on_grid.dtype == labels.dtype and (on_grid == 0).any()  # padding is background


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    """One explain run of a segmentation model, tiled, with a per-case mask, every family."""
    tmp = tmp_path_factory.mktemp("seg")
    torch.manual_seed(0)
    torch.save(TinySeg().state_dict(), tmp / "seg.pt")
    affine = oblique_affine((2.0, 2.0, 2.0), "RAS", angle=0.0)
    shape = (24, 24, 24)
    write_nifti(tmp / "images" / "s1.nii.gz", blob_volume(shape, (12, 12, 12)), affine)
    mask = np.zeros(shape)
    mask[8:16, 8:16, 8:16] = 1
    write_nifti(tmp / "masks" / "s1_roi.nii.gz", mask, affine)
    methods = [
        "saliency",
        {"name": "integrated_gradients", "params": {"steps": 8}},
        "deeplift",
        {"name": "occlusion", "params": {"window": 8, "stride": 8}},
        {"name": "feature_ablation", "params": {"grouping": {"kind": "grid", "size": 12}}},
    ]
    if registry.find("grad_cam") is not None:
        methods.append({"name": "grad_cam", "params": {"layer": "conv"}})
    config = {
        "model": {
            "architecture": "seg_models:TinySeg",
            "python_path": [str(TESTS)],
            "weights": str(tmp / "seg.pt"),
            "classes": ["background", "lesion"],
        },
        "preprocessing": {"intensity": {"kind": "zscore"}},
        "target": {"class": "lesion", "region": "mask", "mask": "masks/{case_id}_roi.nii.gz"},
        "tiling": {"patch_size": [12, 12, 12], "overlap": 0.5},
        "methods": methods,
        "outputs": {"png": False},
        "runtime": {"device": "cpu", "threads": 1},
    }
    (tmp / "run.yaml").write_text(json.dumps(config))
    return explain(tmp / "images", tmp / "run.yaml", tmp / "out"), mask


def test_every_family_explains_a_tiled_segmentation_target(seg_run):
    result, mask = seg_run
    assert result.rows and not result.failed, result.failed
    families = set()
    for row in result.rows:
        sidecar = json.loads(Path(row["sidecar"]).read_text())
        families.add(sidecar["method"]["family"])
        assert sidecar["target"]["name"] == "lesion"
        seg = sidecar["target"]["segmentation"]
        assert seg["region"] == "mask" and seg["reduction"] == "sum"
        assert seg["region_voxels"] == [int(mask.sum())] * 2
        assert sidecar["tiling"]["patch_size"] == [12, 12, 12]
        data = nib.load(row["nifti"]).get_fdata()
        assert np.isfinite(data).all() and np.abs(data).max() > 0
    assert {"gradient", "decomposition", "perturbation"} <= families


def test_the_map_of_a_masked_sum_lives_near_the_mask(seg_run):
    # A 3^3 receptive field: only voxels within one voxel of the mask can move its sum.
    result, mask = seg_run
    row = next(r for r in result.rows if r["method"] == "saliency")
    data = nib.load(row["nifti"]).get_fdata()
    near = np.zeros_like(mask, dtype=bool)
    near[7:17, 7:17, 7:17] = True
    assert np.abs(data[~near]).max() == 0.0


def test_a_missing_mask_is_one_failed_row(tmp_path, seg_run):
    result, _ = seg_run
    config = load_config(Path(result.out_dir).parent / "run.yaml")
    config = updated(
        config,
        {"target": {"mask": "masks/{case_id}_other.nii.gz"}, "methods": config.methods[:1]},
    )
    again = explain(Path(result.out_dir).parent / "images", config, tmp_path)
    assert len(again.failed) == 1
    assert "target.mask file" in again.failed[0]["error"]


def test_config_checks_target_and_tiling_keys(make_config):
    from xaimed.errors import ConfigError

    path = make_config(target={"region": "mask"}, tiling={"patch_size": [8, 8, 0]})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = "\n".join(info.value.problems)
    assert "target.mask (a NIfTI path) is unset" in problems
    assert "tiling.patch_size: every size must be at least 1, got [8, 8, 0]" in problems
    path = make_config(methods=[{"name": "occlusion", "params": {"windw": 4}}])
    with pytest.raises(ConfigError, match="problem") as info:
        load_config(path)
    assert any("unknown key 'windw'; did you mean 'window'" in p for p in info.value.problems)
    path = make_config(methods=[{"name": "lime", "params": {"baseline": {"kind": "haze"}}}])
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        "config.yaml: methods[0].params.baseline: expected 'zero', 'min', 'mean', a number, or "
        "a mapping with kind: blur, noise or reference"
    ]


def test_cases_with_different_regions_in_one_run_map_as_each_alone(tmp_path):
    """Each case's regions are its own: a run of two cases with different masks writes the maps
    that a run of each case alone writes (nothing of the first case's region reaches the second)."""
    torch.manual_seed(0)
    torch.save(TinySeg().state_dict(), tmp_path / "seg.pt")
    affine = oblique_affine((2.0, 2.0, 2.0), "RAS", angle=0.0)
    shape = (16, 16, 16)
    boxes = {"s1": np.s_[4:10, 4:10, 4:10], "s2": np.s_[9:15, 2:7, 8:14]}
    for i, (case_id, box) in enumerate(boxes.items()):
        image = blob_volume(shape, (8, 8, 8), seed=i)
        for folder in ("both", case_id):
            write_nifti(tmp_path / folder / f"{case_id}.nii.gz", image, affine)
        mask = np.zeros(shape)
        mask[box] = 1
        write_nifti(tmp_path / "masks" / f"{case_id}_roi.nii.gz", mask, affine)
    config = {
        "model": {
            "architecture": "seg_models:TinySeg",
            "python_path": [str(TESTS)],
            "weights": str(tmp_path / "seg.pt"),
            "classes": ["background", "lesion"],
        },
        "target": {"class": "lesion", "region": "mask", "mask": "masks/{case_id}_roi.nii.gz"},
        "methods": [
            "saliency",
            {"name": "occlusion", "params": {"window": 4, "stride": 4}},
        ],
        "outputs": {"png": False},
        "runtime": {"device": "cpu", "threads": 1},
    }
    (tmp_path / "run.yaml").write_text(json.dumps(config))
    both = explain(tmp_path / "both", tmp_path / "run.yaml", tmp_path / "out-both")
    alone = {c: explain(tmp_path / c, tmp_path / "run.yaml", tmp_path / f"out-{c}") for c in boxes}
    assert not both.failed and len(both.rows) == 4
    for row in both.rows:
        (single,) = [r for r in alone[row["case_id"]].rows if r["method"] == row["method"]]
        sidecar = json.loads(Path(row["sidecar"]).read_text())
        voxels = sidecar["target"]["segmentation"]["region_voxels"]
        assert voxels == [int(np.ones(shape)[boxes[row["case_id"]]].sum())] * 2
        np.testing.assert_array_equal(
            nib.load(row["nifti"]).get_fdata(), nib.load(single["nifti"]).get_fdata()
        )
