"""Ensembles of `architecture` models: the mean output is explained, members' spread recorded."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import TESTS, blob_volume, oblique_affine, write_nifti
from tiny_models import TinyCNN

from xaimed.config import load_config
from xaimed.errors import ConfigError, ModelError
from xaimed.model import load_model
from xaimed.pipeline import explain

METHODS = [
    {"name": "input_x_gradient"},
    {"name": "grad_cam"},
    {"name": "occlusion", "params": {"window": [4, 4, 4], "stride": [4, 4, 4]}},
]


def _member(tmp_path: Path, seed: int) -> dict:
    torch.manual_seed(seed)
    model = TinyCNN()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
    path = tmp_path / f"member{seed}.pt"
    torch.save(model.state_dict(), path)
    return {
        "architecture": "tiny_models:TinyCNN",
        "python_path": [str(TESTS)],
        "weights": str(path),
    }


def _config(tmp_path: Path, model: dict, name: str) -> Path:
    config = {
        "model": {**model, "classes": ["no", "yes"]},
        "preprocessing": {"intensity": {"kind": "zscore"}},
        "target": {"class": "yes"},
        "methods": METHODS,
        "outputs": {"png": False},
        "runtime": {"device": "cpu", "threads": 1},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, dict]]:
    """One explain run of the two-member ensemble and one of each member alone."""
    tmp = tmp_path_factory.mktemp("ensemble")
    image = write_nifti(tmp / "case.nii.gz", blob_volume(), oblique_affine(), dtype=np.float32)
    members = [_member(tmp, 1), _member(tmp, 2)]
    configs = {
        "ensemble": _config(tmp, {"ensemble": members}, "ensemble"),
        "m0": _config(tmp, members[0], "m0"),
        "m1": _config(tmp, members[1], "m1"),
    }
    out: dict[str, dict[str, dict]] = {}
    for name, config in configs.items():
        result = explain(image, config, tmp / name)
        assert not result.failed, result.failed
        out[name] = {row["method"]: row for row in result.rows}
    out["_image"] = {"path": {"nifti": str(image)}}
    return out


def _map(row: dict) -> nib.Nifti1Image:
    return nib.load(row["nifti"])


def test_ensemble_maps_land_on_the_source_grid(runs):
    source = nib.load(runs["_image"]["path"]["nifti"])
    for method in ("input_x_gradient", "grad_cam", "occlusion"):
        img = _map(runs["ensemble"][method])
        assert img.shape == source.shape
        np.testing.assert_allclose(img.affine, source.affine, atol=1e-5)
        assert np.abs(img.get_fdata()).max() > 0


def test_prediction_is_the_mean_of_the_members_outputs(runs):
    side = {
        k: json.loads(Path(runs[k]["occlusion"]["sidecar"]).read_text())
        for k in runs
        if k[0] != "_"
    }
    ens = np.array(side["ensemble"]["prediction"]["logits"])
    mean = (
        np.array(side["m0"]["prediction"]["logits"]) + np.array(side["m1"]["prediction"]["logits"])
    ) / 2
    np.testing.assert_allclose(ens, mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["input_x_gradient", "occlusion"])
def test_linear_methods_give_the_mean_of_member_maps(runs, method):
    # The score is the mean of the members' scores, and these methods are linear in the score.
    ens = _map(runs["ensemble"][method]).get_fdata()
    members = [_map(runs[k][method]).get_fdata() for k in ("m0", "m1")]
    np.testing.assert_allclose(ens, np.mean(members, axis=0), rtol=1e-4, atol=1e-6)


def test_member_std_and_agreement_are_written(runs):
    for method in ("input_x_gradient", "grad_cam", "occlusion"):
        record = json.loads(Path(runs["ensemble"][method]["sidecar"]).read_text())
        spread = record["ensemble"]
        std = nib.load(spread["member_std_nifti"]).get_fdata()
        singles = [_map(runs[k][method]).get_fdata() for k in ("m0", "m1")]
        if method != "grad_cam":  # Grad-CAM's layer differs: per member it is the member's own
            np.testing.assert_allclose(std, np.std(singles, axis=0), rtol=1e-4, atol=1e-6)
        assert std.max() > 0
        assert spread["members"] == 2 and len(spread["pairs"]) == 1
        assert -1 <= spread["mean_spearman"] <= 1
        assert 0 <= spread["mean_top_k_overlap"] <= 1
        assert record["model"]["kind"] == "ensemble" and len(record["model"]["members"]) == 2


def test_an_ensemble_of_one_is_refused(tmp_path):
    path = _config(tmp_path, {"ensemble": [_member(tmp_path, 1)]}, "one")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any("at least two members" in p for p in caught.value.problems)


class _Payload:
    """Unpickling this creates a file: the proof that a load ran code from the checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_payload_in_a_member_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pt"
    torch.save({"conv.weight": _Payload(marker)}, bad)
    member = _member(tmp_path, 1)
    cfg = load_config(
        _config(tmp_path, {"ensemble": [member, {**member, "weights": str(bad)}]}, "bad")
    )
    with pytest.raises(ModelError, match="allow_pickle"):
        load_model(cfg.model, torch.device("cpu"))
    assert not marker.exists()


@pytest.mark.parametrize("key", ["weights", "torchscript"])
def test_pickled_payload_is_refused_in_single_model_formats(tmp_path, key):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pt"
    torch.save({"conv.weight": _Payload(marker)}, bad)
    model = _member(tmp_path, 1)
    if key == "torchscript":
        model = {"torchscript": str(bad)}
    else:
        model["weights"] = str(bad)
    cfg = load_config(_config(tmp_path, model, key))
    with pytest.raises(ModelError, match="allow_pickle" if key == "weights" else "TorchScript"):
        load_model(cfg.model, torch.device("cpu"))
    assert not marker.exists()


@pytest.mark.parametrize(
    "method", ["saliency", "integrated_gradients", "guided_backprop", "deeplift"]
)
def test_gradient_methods_on_the_ensemble_are_the_mean_of_member_maps(method):
    # The members run under activation checkpointing in these backward passes (hooks included).
    from conftest import run_method

    from xaimed.models.ensemble import EnsembleModule

    torch.manual_seed(0)
    members = [TinyCNN().eval(), TinyCNN().eval()]
    ensemble = EnsembleModule(members).eval()
    x = torch.randn(1, 1, 8, 8, 8)
    ens, _, _ = run_method(method, ensemble, x, context={"network": ensemble})
    singles = [run_method(method, m, x, context={"network": m})[0] for m in members]
    assert ens.abs().max() > 0
    torch.testing.assert_close(ens, (singles[0] + singles[1]) / 2, rtol=1e-4, atol=1e-7)
