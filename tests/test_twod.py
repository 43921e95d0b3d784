"""2D images and 2D models: reading 2D NIfTI, every method family on a 2D network (through the
plane adapter), the incremental engine's exactness in 2D, 2D outputs and evaluate on a 2D run."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import run_method
from tiny_models import TinyCNN, TinyCNN2D

from xaimed.config import load_config
from xaimed.engine.planar import PlaneModel
from xaimed.errors import ConfigError
from xaimed.io.nifti import read_nifti
from xaimed.pipeline import explain
from xaimed.progress import LogReporter
from xaimed.writers.manifest import read_manifest

SHAPE = (16, 12)
TESTS = Path(__file__).parent


def _network() -> TinyCNN2D:
    torch.manual_seed(0)
    net = TinyCNN2D()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _plane(seed: int = 0) -> torch.Tensor:
    """A (1, 1, X, Y, 1) plane with a bright blob, as xaimed hands a 2D image to a method."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    image = 3 * np.exp(-((i - 5) ** 2 + (j - 7) ** 2) / 6.0) + rng.normal(0, 0.3, SHAPE)
    return torch.tensor(image, dtype=torch.float32)[None, None, ..., None]


def _run(name: str, net: torch.nn.Module, x: torch.Tensor, **params):
    context = {"network": net, "spatial_dims": 2}
    return run_method(name, PlaneModel(net), x, context=context, **params)


def _radiograph_affine() -> np.ndarray:
    # Columns towards the patient's left, rows towards the feet, normal posterior; off-centre.
    affine = np.array([[-0.7, 0, 0, 40.0], [0, 0, -1.0, 12.0], [0, -0.9, 0, 90.0], [0, 0, 0, 1]])
    return affine


# ------------------------------------------------------------------ Volume and reading


def test_a_2d_nifti_is_read_as_a_plane_with_its_normal(tmp_path):
    affine = _radiograph_affine()
    affine_file = affine.copy()
    affine_file[:3, 2] = [0.0, -7.0, 0.0]  # pixdim[3] is whatever the writer left there
    image = np.arange(np.prod(SHAPE)).reshape(SHAPE).astype(np.int16)
    nib.save(nib.Nifti1Image(image, affine_file), tmp_path / "cxr.nii.gz")
    volume = read_nifti(tmp_path / "cxr.nii.gz")
    assert volume.array.shape == (*SHAPE, 1) and volume.is_2d
    np.testing.assert_array_equal(volume.array[..., 0], image)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)  # unit normal, 1 mm
    assert volume.with_array(np.zeros((*SHAPE, 1))).is_2d  # maps keep the 2D meta
    three_d = read_nifti(_write(tmp_path / "vol.nii.gz", np.zeros((*SHAPE, 1)), affine))
    assert not three_d.is_2d  # a 3D file of one slice is a volume, not a 2D image


def _write(path: Path, data: np.ndarray, affine: np.ndarray, dtype=np.int16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)
    return path


# ------------------------------------------------------------------ method families


def test_gradients_are_the_2d_networks_own(tmp_path):
    net, x = _network(), _plane()
    attribution, _, count = _run("saliency", net, x)
    plane = x[..., 0].clone().requires_grad_(True)
    net(plane)[0, 1].backward()
    assert attribution.shape == x.shape
    torch.testing.assert_close(attribution[..., 0], plane.grad)
    assert count.forward == 1 and count.backward == 1


def test_grad_cam_upsamples_the_2d_layer_bilinearly_to_the_plane():
    net, x = _network(), _plane()
    attribution, details, _ = _run("grad_cam", net, x, layer="conv2")
    features = {}
    net.conv2.register_forward_hook(lambda m, a, out: features.update(a=out))
    plane = x[..., 0]
    score = net(plane)[0, 1]
    a = features["a"]
    (g,) = torch.autograd.grad(score, a)
    cam = (g.mean(dim=(2, 3), keepdim=True) * a).sum(1).clamp(min=0)
    expected = torch.nn.functional.interpolate(cam[:, None], size=SHAPE, mode="bilinear")
    assert attribution.shape == x.shape
    torch.testing.assert_close(attribution[..., 0], expected.detach())
    assert details["native_shape"] == [8, 6] and details["upsampling"].startswith("bilinear")


@pytest.mark.parametrize("name", ["cam", "hires_cam", "layer_cam", "eigen_cam", "score_cam"])
def test_cam_variants_run_on_2d_layers(name):
    net, x = _network(), _plane()
    params = {"layers": ["conv2", "relu1"]} if name == "layer_cam" else {}
    attribution, details, _ = _run(name, net, x, **params)
    assert attribution.shape == x.shape and torch.isfinite(attribution).all()
    assert attribution.abs().max() > 0
    assert "bilinear" in details["upsampling"]


def test_cam_of_a_2d_network_is_the_head_times_the_features():
    net, x = _network(), _plane()
    attribution, _, _ = _run("cam", net, x)
    features = {}
    net.relu2.register_forward_hook(lambda m, a, out: features.update(a=out))
    net(x[..., 0])
    cam = (net.fc.weight[1][None, :, None, None] * features["a"]).sum(1)
    expected = torch.nn.functional.interpolate(cam[:, None], size=SHAPE, mode="bilinear")
    torch.testing.assert_close(attribution[..., 0], expected.detach())


def test_lrp_on_conv2d_conserves_the_logit():
    net, x = _network(), _plane()
    attribution, _, _ = _run("lrp", net, x, rule="epsilon", epsilon=1e-9)
    logit = float(net(x[..., 0])[0, 1].detach())
    assert attribution.shape == x.shape
    assert float(attribution.sum()) == pytest.approx(logit, rel=1e-3, abs=1e-4)


def test_occlusion_takes_a_window_of_two_numbers_and_matches_by_hand():
    net, x = _network(), _plane()
    attribution, _, _ = _run(
        "occlusion", net, x, window=[4, 3], stride=[4, 3], baseline="zero",
        engine="plain",
    )  # fmt: skip
    with torch.no_grad():
        reference = net(x[..., 0])[0, 1]
        occluded = x[..., 0].clone()
        occluded[..., 4:8, 3:6] = 0
        drop = reference - net(occluded)[0, 1]
    assert attribution.shape == x.shape
    # Each pixel is in exactly one window (stride = window): its value is that window's drop.
    torch.testing.assert_close(attribution[0, 0, 4:8, 3:6, 0], drop.expand(4, 3))


def test_incremental_occlusion_equals_the_plain_engine_in_2d():
    net, x = _network(), _plane(seed=3)
    params = {"window": [3, 3], "stride": [2, 2], "baseline": "mean"}
    plain, _, _ = _run("occlusion", net, x, engine="plain", **params)
    fast, details, _ = _run("occlusion", net, x, engine="incremental", **params)
    assert details["engine"] == "incremental"
    scale = float(plain.abs().max())
    assert scale > 0
    assert float((fast - plain).abs().max()) <= 1e-4 * scale


def test_feature_ablation_on_a_grid_of_two_numbers():
    net, x = _network(), _plane()
    grouping = {"kind": "grid", "size": [8, 6]}
    attribution, _, _ = _run("feature_ablation", net, x, grouping=grouping, baseline="zero")
    with torch.no_grad():
        occluded = x[..., 0].clone()
        occluded[..., 8:16, 6:12] = 0
        drop = net(x[..., 0])[0, 1] - net(occluded)[0, 1]
    assert attribution.shape == x.shape
    # Four groups of 8 x 6 pixels, each valued by its own score drop.
    torch.testing.assert_close(attribution[0, 0, 8:16, 6:12, 0], drop.expand(8, 6))


# ------------------------------------------------------------------ config and mismatches


def _study(root: Path, *, spatial_dims: int = 2, methods=None, extra=None) -> Path:
    torch.save(_network().state_dict(), root / "tiny2d.pt")
    config = {
        "model": {
            "architecture": "tiny_models:TinyCNN2D",
            "python_path": [str(TESTS)],
            "weights": "tiny2d.pt",
            "spatial_dims": spatial_dims,
            "input_size": list(SHAPE),
            "classes": ["no", "yes"],
        },
        "preprocessing": {"intensity": {"kind": "zscore"}},
        "target": {"class": 1},
        "methods": methods or ["saliency"],
        "runtime": {"device": "cpu", "threads": 1},
        **(extra or {}),
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root / "config.yaml"


def test_two_numbers_for_a_3d_model_are_refused_at_load(tmp_path):
    path = _study(tmp_path, spatial_dims=3)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "model.spatial_dims: 2" in " ".join(info.value.problems)
    config = yaml.safe_load(path.read_text())
    config["model"]["input_size"] = [16, 12, 1]
    config["methods"] = [{"name": "occlusion", "params": {"window": [4, 4]}}]
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "methods[0].params.window has two numbers" in " ".join(info.value.problems)
    config["model"]["spatial_dims"] = 2
    path.write_text(yaml.safe_dump(config))
    assert load_config(path).model.input_size == (16, 12, 1)


def test_a_3d_volume_for_a_2d_model_fails_its_case_in_one_sentence(tmp_path):
    images = tmp_path / "images"
    _write(images / "flat.nii.gz", _plane()[0, 0, ..., 0].numpy() * 100, _radiograph_affine())
    _write(images / "stack.nii.gz", np.ones((*SHAPE, 5)), np.eye(4))
    config = _study(tmp_path)
    result = explain(images, config, tmp_path / "run", reporter=LogReporter())
    rows = {r["case_id"]: r for r in result.rows}
    assert rows["flat"]["status"] == "ok"
    error = rows["stack"]["error"]
    assert rows["stack"]["status"] == "failed"
    assert "case stack: the image is a 3D volume of 5 slices" in error
    assert "model.spatial_dims is 2" in error and error.count(". ") == 0


def test_a_reorientation_that_moves_the_plane_fails_the_case(tmp_path):
    _write(tmp_path / "images" / "cxr.nii.gz", np.ones(SHAPE), _radiograph_affine())
    config = _study(tmp_path, extra={"preprocessing": {"reorient": "RAS"}})
    result = explain(tmp_path / "images", config, tmp_path / "run", reporter=LogReporter())
    (row,) = result.rows
    assert row["status"] == "failed"
    assert "case cxr: after preprocessing the 2D image is (16, 1, 12), not a plane" in row["error"]


def test_a_2d_image_for_a_3d_model_fails_its_case(tmp_path):
    _write(tmp_path / "images" / "cxr.nii.gz", np.ones(SHAPE), _radiograph_affine())
    torch.save(TinyCNN().state_dict(), tmp_path / "tiny.pt")
    config = {
        "model": {"architecture": "tiny_models:TinyCNN", "python_path": [str(TESTS)],
                  "weights": "tiny.pt"},
        "methods": ["saliency"], "runtime": {"device": "cpu"},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = explain(tmp_path / "images", tmp_path / "config.yaml", tmp_path / "run",
                     reporter=LogReporter())  # fmt: skip
    (row,) = result.rows
    assert row["status"] == "failed"
    assert "case cxr: the image is 2D (16, 12) but the model is 3D" in row["error"]


# ------------------------------------------------------------------ outputs and evaluate


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("twod")
    affine = _radiograph_affine()
    image = _plane()[0, 0, ..., 0].numpy() * 100 + 500
    _write(root / "images" / "cxr.nii.gz", image, affine)
    mask = np.zeros(SHAPE)
    mask[3:8, 5:10] = 1
    _write(root / "masks" / "cxr_mask.nii.gz", mask, affine, dtype=np.uint8)
    methods = [
        "saliency",
        {"name": "grad_cam", "params": {"layer": "conv2"}},
        {"name": "occlusion", "params": {"window": [4, 4], "stride": [2, 2], "engine": "auto"}},
    ]
    extra = {
        "outputs": {"png": True},
        "evaluate": {
            "masks": "masks/{case_id}_mask.nii.gz",
            "faithfulness": {"steps": 5},
            "robustness": {"samples": 2, "methods": ["saliency"]},
            "sanity": {"randomised_labels_checkpoint": "tiny2d.pt"},
        },
    }
    config = _study(root, methods=methods, extra=extra)
    explain(root / "images", config, root / "run", reporter=LogReporter())
    return root


def test_2d_maps_are_2d_nifti_on_the_source_geometry_with_one_panel_png(run_2d):
    rows = read_manifest(run_2d / "run" / "manifest.csv")
    assert {r["method"] for r in rows} == {"saliency", "grad_cam", "occlusion"}
    source = nib.load(run_2d / "images" / "cxr.nii.gz")
    for row in rows:
        assert row["status"] == "ok", row["error"]
        out = nib.load(row["nifti"])
        assert out.shape == SHAPE
        np.testing.assert_allclose(out.affine, source.affine, atol=1e-6)
        assert np.abs(out.get_fdata()).max() > 0
        assert Path(row["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        sidecar = json.loads(Path(row["sidecar"]).read_text())
        assert sidecar["source"]["spatial_dims"] == 2
        assert sidecar["source"]["shape"] == [*SHAPE, 1]
    from PIL import Image

    width, height = Image.open(rows[0]["png"]).size
    assert width < 1.3 * height  # one panel, not three side by side


def test_evaluate_runs_every_kind_on_a_2d_case(run_2d, tmp_path):
    from xaimed.evaluate.runner import evaluate

    result = evaluate(run_2d / "run", out_dir=tmp_path / "evaluation")
    assert result.failures == []
    metrics = {(r["method"], r["metric"]) for r in result.rows}
    for metric in ("pointing_game", "mass_inside", "deletion_auc", "randomisation_spearman"):
        assert ("saliency", metric) in metrics, metric
    assert ("saliency", "max_sensitivity") in metrics
    inside = result.values("mass_inside", "saliency")["cxr"]
    assert 0.0 <= inside <= 1.0
    # SSIM is taken in the plane (a 3D window would not fit a depth of 1).
    ssim = result.values("randomisation_ssim", "saliency")["cxr"]
    assert -1.0 <= ssim <= 1.0
