"""`xaimed evaluate` end to end over an explain run: outputs, reuse of the run's config,
re-explaining that reproduces the stored maps, checkpoints, and one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import blob_volume, oblique_affine, write_nifti
from test_cli import _invoke
from tiny_models import TinyCNN

from xaimed.config import load_config, updated
from xaimed.errors import ConfigError
from xaimed.evaluate.runner import evaluate
from xaimed.evaluate.session import build_scorer, open_case, reexplain
from xaimed.io.case import Case
from xaimed.model import load_model
from xaimed.pipeline import explain
from xaimed.progress import LogReporter

AFFINE = oblique_affine((1.5, 2.0, 3.0), "LPS")
SHAPE = (20, 18, 14)


def _mask() -> np.ndarray:
    mask = np.zeros(SHAPE)
    mask[8:13, 7:12, 5:10] = 1  # around the bright blob of blob_volume()
    return mask


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Two cases (one with a mask), a tiny model, a config with an evaluate section, a run."""
    root = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    torch.save(TinyCNN().state_dict(), root / "tiny.pt")
    torch.manual_seed(1)
    torch.save(TinyCNN().state_dict(), root / "other.pt")
    write_nifti(root / "images" / "a.nii.gz", blob_volume(seed=0), AFFINE)
    write_nifti(root / "images" / "b.nii.gz", blob_volume(seed=1), AFFINE)
    write_nifti(root / "masks" / "a_lesion.nii.gz", _mask(), AFFINE, dtype=np.uint8)
    config = {
        "model": {
            "architecture": "tiny_models:TinyCNN",
            "python_path": [str(Path(__file__).parent)],
            "weights": "tiny.pt",
            "classes": ["no", "yes"],
        },
        "preprocessing": {
            "reorient": "RAS",
            "resample": {"spacing": [2.0, 2.0, 2.0]},
            "intensity": {"kind": "zscore"},
        },
        "target": {"class": 1},
        "methods": ["saliency", {"name": "integrated_gradients", "params": {"steps": 8}}],
        "outputs": {"png": False},
        "runtime": {"device": "cpu", "threads": 1, "batch_size": 8},
        "evaluate": {
            "masks": "masks/{case_id}_lesion.nii.gz",
            "faithfulness": {"steps": 10},
            "robustness": {"samples": 2, "methods": ["integrated_gradients"]},
            "sanity": {"randomised_labels_checkpoint": "tiny.pt"},
            "agreement": {"checkpoints": ["other.pt"]},
        },
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    explain(root / "images", root / "config.yaml", root / "run", reporter=LogReporter())
    return root


@pytest.fixture(scope="module")
def evaluated(study: Path, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("evaluation")
    # The run's config.json, with evaluate paths made absolute when it was written.
    return out, evaluate(study / "run", out_dir=out)


def _rows(path: Path) -> list[dict[str, str]]:
    # metrics.csv is not a manifest: its cells are read as text (read_manifest types manifests).
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_metrics_csv_has_every_kind_per_case_and_method(evaluated):
    out, result = evaluated
    assert result.failures == []
    rows = _rows(out / "metrics.csv")
    assert list(rows[0]) == ["case_id", "method", "target", "metric", "value", "detail"]
    metrics = {(r["case_id"], r["method"], r["metric"]) for r in rows}
    for method in ("saliency", "integrated_gradients"):
        for metric in ("pointing_game", "mass_inside", "auroc", "dice_top", "iou_top",
                       "hausdorff95_mm", "deletion_auc", "insertion_auc",
                       "randomisation_spearman", "randomisation_ssim", "randomisation_verdict",
                       "data_randomisation_spearman", "checkpoint_agreement_spearman"):  # fmt: skip
            assert ("a", method, metric) in metrics, (method, metric)
        # Case b has no mask file: no localisation, but everything else.
        assert ("b", method, "pointing_game") not in metrics
        assert ("b", method, "deletion_auc") in metrics
    assert ("a", "integrated_gradients", "max_sensitivity") in metrics
    assert ("a", "saliency", "max_sensitivity") not in metrics  # robustness.methods
    assert ("a", "saliency vs integrated_gradients", "method_agreement_spearman") in metrics
    cascade = [r for r in rows if r["metric"] == "cascade_spearman" and r["case_id"] == "a"
               and r["method"] == "saliency"]  # fmt: skip
    assert [r["detail"] for r in cascade] == ["1:fc", "2:bn", "3:conv"]


def test_data_randomisation_against_the_same_weights_fails_with_its_threshold(evaluated):
    _, result = evaluated
    details = [r for r in result.rows if r["metric"] == "data_randomisation_verdict"]
    assert details and all(r["value"] == 0.0 for r in details)
    assert all(r["detail"].startswith("fail; pass when Spearman < 0.5") for r in details)
    assert all(v == pytest.approx(1.0, abs=1e-5)
               for v in result.values("data_randomisation_spearman").values())  # fmt: skip


def test_summary_json_and_plots(evaluated):
    out, result = evaluated
    summary = json.loads((out / "evaluation.json").read_text())
    stat = summary["metrics"]["saliency"]["deletion_auc"]
    values = [v for (c, v) in result.values("deletion_auc", "saliency").items()]
    assert stat["n"] == 2 and stat["mean"] == pytest.approx(np.mean(values))
    assert stat["ci_low"] < stat["mean"] < stat["ci_high"]
    assert summary["confidence"] == 0.95
    verdict = summary["verdicts"]["saliency"]["model_randomisation"]
    assert verdict["threshold"] == 0.5 and verdict["rule"] == "pass when Spearman < 0.5"
    assert verdict["pass"] + verdict["fail"] + verdict["undetermined"] == 2
    assert {c["kind"] for c in summary["curves"]} == {"deletion", "insertion"}
    for name in ("evaluation_curves.png", "evaluation_cascade.png", "evaluation_table.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reexplaining_reproduces_the_stored_map(study):
    config = load_config(study / "config.yaml")
    loaded = load_model(config.model, torch.device("cpu"))
    scorer = build_scorer(loaded.module, config, is_script=False)
    case = open_case(Case("a", study / "images" / "a.nii.gz"), config, scorer, loaded.device)
    for entry in config.methods:
        stored = nib.load(study / "run" / "a" / f"a_{entry.output_id}.nii.gz").get_fdata()
        again = reexplain(scorer, case, entry, 1, config)
        np.testing.assert_allclose(again, stored, rtol=1e-5, atol=1e-6 * np.abs(stored).max())


def test_cli_evaluate_writes_into_the_run_and_exits_0(study, tmp_path):
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["evaluate"] = {"masks": str(study / "masks" / "{case_id}_lesion.nii.gz")}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config).replace("tiny.pt", str(study / "tiny.pt")))
    result, text = _invoke("evaluate", study / "run", "--config", path, "--out", tmp_path / "o",
                           "--metric", "localisation", "--metric", "faithfulness")  # fmt: skip
    assert result.exit_code == 0, text
    metrics = {r["metric"] for r in _rows(tmp_path / "o" / "metrics.csv")}
    assert "pointing_game" in metrics and "deletion_auc" in metrics
    assert "randomisation_spearman" not in metrics


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere"], "no such run folder"),
        (["{run}", "--metric", "beauty"], "--metric beauty: unknown"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(study, args, message):
    args = [a.format(run=study / "run") for a in args]
    result, text = _invoke("evaluate", *args)
    assert result.exit_code == 2
    assert message in text and "Traceback" not in text


def test_sanity_methods_must_be_methods_of_the_run(study, tmp_path):
    config = load_config(study / "config.yaml")
    config = updated(config, {"evaluate": {"sanity": {"methods": ["lime"]}}})
    with pytest.raises(ConfigError, match="not a method of this run") as info:
        evaluate(study / "run", config, out_dir=tmp_path)
    assert info.value.problems[0].startswith("evaluate.sanity.methods: 'lime'")


def test_evaluate_section_is_strict(make_config):
    path = make_config(evaluate={"faithfulness": {"step": 10}})
    result, text = _invoke("validate", path)
    assert result.exit_code == 2
    assert "evaluate.faithfulness.step: unknown key 'step'; did you mean 'steps'?" in text


def test_a_config_with_another_model_than_the_run_fails_each_case(study, tmp_path):
    config = load_config(study / "config.yaml")
    config = updated(config, {"model": {"weights": study / "other.pt"}})
    result = evaluate(study / "run", config, out_dir=tmp_path, metrics=["localisation"])
    assert len(result.failures) == 2 and result.rows == []
    assert "the map was made by the model with SHA-256" in result.failures[0]


def test_source_maps_go_back_onto_the_model_grid_for_the_curves(study):
    from scipy import ndimage

    from xaimed.evaluate.similarity import spearman

    config = load_config(study / "config.yaml")
    loaded = load_model(config.model, torch.device("cpu"))
    scorer = build_scorer(loaded.module, config, is_script=False)
    case = open_case(Case("a", study / "images" / "a.nii.gz"), config, scorer, loaded.device)
    rng = np.random.default_rng(0)
    on_model = ndimage.gaussian_filter(rng.normal(size=case.inputs.shape[2:]), 2.0)
    on_source = case.prepared.invert_map(on_model[None]).array
    back = case.to_model_grid(on_source)
    assert back.shape == on_model.shape
    assert spearman(back, on_model, absolute=False) > 0.9
