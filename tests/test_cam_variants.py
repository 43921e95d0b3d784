"""CAM variants (HiResCAM, XGrad-CAM, LayerCAM, Score-CAM, Ablation-CAM, EigenCAM) against
closed forms on models small enough to compute by hand.

pytorch-grad-cam is not a reference here: every CAM class of it imports torchvision (through its
``utils.image`` and ``utils.model_targets``), which this project does not install, and whose PyPI
wheel does not load with the CPU build of torch ("operator torchvision::nms does not exist"). The
closed forms below pin each variant's definition instead; the README lists how pytorch-grad-cam
differs.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import ROOT, blob_volume, oblique_affine, run_method, write_nifti
from tiny_models import MemoryBound
from torch import nn

from xaimed.errors import ConfigError, MethodError
from xaimed.methods import registry

VARIANTS = ["hires_cam", "xgrad_cam", "layer_cam", "score_cam", "ablation_cam", "eigen_cam"]


class ConvGap(nn.Module):
    """conv -> ReLU -> global average pooling -> linear; ``dims`` spatial axes (2 or 3)."""

    def __init__(self, dims: int = 3, channels: int = 3, classes: int = 2) -> None:
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        pool = nn.AdaptiveAvgPool3d if dims == 3 else nn.AdaptiveAvgPool2d
        self.conv = conv(1, channels, 3, padding=1)
        self.relu = nn.ReLU()
        self.gap = pool(1)
        self.fc = nn.Linear(channels, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gap(self.features(x)).flatten(1))


class TwoStage(nn.Module):
    """Two conv stages (the second at half resolution), one ReLU module used by both, and a
    non-linear head, so gradients vary over positions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 3, 3, padding=1)
        self.conv2 = nn.Conv3d(3, 4, 3, padding=1, stride=2)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc((a**2).mean(dim=(2, 3, 4)))


def _model(cls=ConvGap, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    model = cls(**kwargs).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _run(name: str, model: nn.Module, x: torch.Tensor, **kwargs):
    """run_method with layer names looked up in ``model`` itself, as the pipeline does."""
    return run_method(name, model, x, context={"network": model}, **kwargs)


def _x(shape=(6, 6, 6), seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(seed))


def _features_and_gradient(model: ConvGap, x: torch.Tensor, target: int = 1):
    a = model.features(x).detach().requires_grad_()
    score = model.fc(a.flatten(2).mean(-1))[0, target]
    (g,) = torch.autograd.grad(score, a)
    return a.detach(), g, float(score.detach())


# ---------------------------------------------------------------- HiResCAM


def test_hires_cam_is_gradient_times_activation_and_cam_over_n():
    model, x = _model(), _x()
    out, details, count = _run("hires_cam", model, x, relu=False)
    a, g, score = _features_and_gradient(model, x)
    # A 3x3x3 same-padded conv keeps the grid: the map is at input resolution, no interpolation.
    torch.testing.assert_close(out, (g * a).sum(dim=1, keepdim=True))
    # With GAP + linear the gradient is w_k / N everywhere: HiResCAM = CAM / N, and it sums to
    # the score minus the bias (a complete decomposition of the logit over positions).
    cam, _, _ = _run("cam", model, x)
    n = x[0, 0].numel()
    torch.testing.assert_close(out, cam / n)
    assert float(out.sum()) == pytest.approx(score - float(model.fc.bias[1]), rel=1e-5)
    assert details["layer"] == "relu" and details["native_shape"] == [6, 6, 6]
    assert details["upsampling"].startswith("trilinear") and details["relu"] is False
    assert (count.forward, count.backward) == (1, 1)
    positive, _, _ = _run("hires_cam", model, x)
    torch.testing.assert_close(positive, out.clamp(min=0))


def test_hires_cam_differs_from_grad_cam_where_gradients_vary():
    model, x = _model(TwoStage), _x((8, 8, 8))
    hires, details, _ = _run("hires_cam", model, x, layer="conv2", relu=False)
    grad_cam, _, _ = _run("grad_cam", model, x, layer="conv2", relu=False)
    assert details["native_shape"] == [4, 4, 4]
    assert not torch.allclose(hires, grad_cam, atol=1e-4 * float(hires.abs().max()))


# ---------------------------------------------------------------- XGrad-CAM


def test_xgrad_cam_weights_by_hand_and_equal_grad_cam_after_gap_linear():
    model, x = _model(), _x()
    out, details, _ = _run("xgrad_cam", model, x, relu=False)
    a, g, _ = _features_and_gradient(model, x)
    weights = (g * a).sum(dim=(2, 3, 4), keepdim=True) / a.sum(dim=(2, 3, 4), keepdim=True)
    torch.testing.assert_close(out, (weights * a).sum(dim=1, keepdim=True))
    # After GAP + linear, sum(g A) / sum(A) = w_k / N: the Grad-CAM weight.
    grad_cam, _, _ = _run("grad_cam", model, x, relu=False)
    torch.testing.assert_close(out, grad_cam)
    assert details["layer"] == "relu"


def test_xgrad_cam_gives_a_dead_channel_no_weight():
    model, x = _model(), _x()
    with torch.no_grad():
        model.conv.weight[0] = 0
        model.conv.bias[0] = -1  # channel 0 is zero everywhere after the ReLU
    out, _, _ = _run("xgrad_cam", model, x, relu=False)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, _run("grad_cam", model, x, relu=False)[0])


# ---------------------------------------------------------------- LayerCAM


def test_layer_cam_one_layer_by_hand():
    model, x = _model(TwoStage), _x((8, 8, 8))
    out, details, count = _run("layer_cam", model, x, layers=["conv1"])
    with torch.enable_grad():
        a = model.conv1(x).requires_grad_()
        score = model.fc((model.relu(model.conv2(model.relu(a))) ** 2).mean(dim=(2, 3, 4)))
        (g,) = torch.autograd.grad(score[0, 1], a)
    expected = (g.clamp(min=0) * a.detach()).sum(dim=1, keepdim=True).clamp(min=0)
    torch.testing.assert_close(out, expected)
    assert details["layers"] == ["conv1"] and details["native_shape"] == [8, 8, 8]
    assert (count.forward, count.backward) == (1, 1)


def test_layer_cam_equals_hires_cam_when_every_gradient_is_positive():
    model = _model()
    with torch.no_grad():
        model.fc.weight[1] = model.fc.weight[1].abs()
    x = _x()
    layer_cam, _, _ = _run("layer_cam", model, x)
    torch.testing.assert_close(layer_cam, _run("hires_cam", model, x)[0])


@pytest.mark.parametrize("fusion", ["mean", "max"])
def test_layer_cam_fuses_layers_scaled_by_their_maxima(fusion):
    model, x = _model(TwoStage), _x((8, 8, 8))
    fused, details, count = _run("layer_cam", model, x, layers=["conv1", "conv2"], fusion=fusion)
    one = _run("layer_cam", model, x, layers=["conv1"])[0]
    two = _run("layer_cam", model, x, layers=["conv2"])[0]
    stacked = torch.stack([one / one.max(), two / two.max()])
    expected = stacked.mean(dim=0) if fusion == "mean" else stacked.amax(dim=0)
    torch.testing.assert_close(fused, expected)
    assert details["native_shapes"] == [[8, 8, 8], [4, 4, 4]]
    assert details["layer_maxima"] == pytest.approx([float(one.max()), float(two.max())])
    assert (count.forward, count.backward) == (1, 1)  # every layer from one pass


def test_layer_cam_counts_a_layer_named_twice_once():
    model, x = _model(), _x()
    both, details, _ = _run("layer_cam", model, x, layers=["relu", "auto"])
    assert details["layers"] == ["relu"]  # 'auto' is the ReLU here: not fused with itself
    torch.testing.assert_close(both, _run("layer_cam", model, x)[0])


# ---------------------------------------------------------------- Score-CAM


@pytest.mark.parametrize("baseline", ["zero", "min"])
def test_score_cam_weights_are_softmaxed_scores_of_masked_inputs(baseline):
    model, x = _model(), _x()
    out, details, count = _run("score_cam", model, x, batch_size=2, relu=False, baseline=baseline)
    a = model.features(x)
    masks = (a - a.amin(dim=(2, 3, 4), keepdim=True)) / (
        a.amax(dim=(2, 3, 4), keepdim=True) - a.amin(dim=(2, 3, 4), keepdim=True)
    )
    fill = 0.0 if baseline == "zero" else float(x.min())
    scores = torch.stack(
        [model(x * masks[:, k : k + 1] + fill * (1 - masks[:, k : k + 1]))[0, 1] for k in range(3)]
    )
    weights = torch.softmax(scores, dim=0)
    torch.testing.assert_close(out, (weights.view(1, 3, 1, 1, 1) * a).sum(1, keepdim=True))
    # One pass for the activations, then the three masked inputs in batches of two.
    assert (count.forward, count.forward_calls, count.backward) == (4, 3, 0)
    assert details["perturbations"] == 3 and details["batch_size"] == 2
    assert details["out_of_memory_backoffs"] == 0 and details["channels"] == 3
    assert details["baseline"] == baseline


def test_score_cam_masks_are_upsampled_layer_maps():
    model, x = _model(TwoStage), _x((8, 8, 8))
    out, details, _ = _run("score_cam", model, x, layer="conv2", relu=False, baseline="zero")
    a = model.conv2(model.relu(model.conv1(x)))
    up = torch.nn.functional.interpolate(a, size=(8, 8, 8), mode="trilinear")
    lo, hi = up.amin(dim=(2, 3, 4), keepdim=True), up.amax(dim=(2, 3, 4), keepdim=True)
    scores = torch.stack([model(x * ((up - lo) / (hi - lo))[:, k : k + 1])[0, 1] for k in range(4)])
    cam = (torch.softmax(scores, 0).view(1, 4, 1, 1, 1) * a).sum(1, keepdim=True)
    expected = torch.nn.functional.interpolate(cam, size=(8, 8, 8), mode="trilinear")
    torch.testing.assert_close(out, expected)
    assert details["native_shape"] == [4, 4, 4]


def test_score_and_ablation_cam_back_off_on_out_of_memory():
    # MemoryBound raises CUDA's out-of-memory error above 1100 voxels: batches of 4 and 3 inputs
    # of 8^3 fail, 2 fit. The maps equal those made one input at a time.
    x = _x((8, 8, 8))
    for name in ("score_cam", "ablation_cam"):
        model = _model(MemoryBound, bound=1100)
        out, details, _ = _run(name, model, x, batch_size=4)
        single, _, _ = _run(name, model, x, batch_size=1)
        torch.testing.assert_close(out, single)
        assert details["out_of_memory_backoffs"] == 1 and details["batch_size"] == 2, name
        assert details["perturbations"] == 4


# ---------------------------------------------------------------- Ablation-CAM


def test_ablation_cam_weights_are_the_score_drop_per_channel():
    model, x = _model(), _x()
    out, details, count = _run("ablation_cam", model, x, batch_size=2, relu=False)
    a, _, score = _features_and_gradient(model, x)
    # After GAP + linear, zeroing channel k drops the score by w_k * mean(A_k), exactly.
    drops = model.fc.weight[1] * a.mean(dim=(2, 3, 4))[0]
    torch.testing.assert_close(out, (drops.view(1, 3, 1, 1, 1) * a).sum(1, keepdim=True))
    assert details["unablated_score"] == pytest.approx(score)
    assert (count.forward, count.forward_calls) == (4, 3) and details["perturbations"] == 3


def test_ablation_cam_ablates_a_reused_module_at_its_last_call():
    model, x = _model(TwoStage), _x((8, 8, 8))
    out, details, _ = _run("ablation_cam", model, x, relu=False)
    assert details["layer"] == "relu" and details["native_shape"] == [4, 4, 4]
    a = model.relu(model.conv2(model.relu(model.conv1(x))))
    reference = model.fc((a**2).mean(dim=(2, 3, 4)))[0, 1]
    drops = []
    for k in range(4):
        ablated = a.clone()
        ablated[:, k] = 0
        drops.append(reference - model.fc((ablated**2).mean(dim=(2, 3, 4)))[0, 1])
    cam = (torch.stack(drops).view(1, 4, 1, 1, 1) * a).sum(1, keepdim=True)
    expected = torch.nn.functional.interpolate(cam, size=(8, 8, 8), mode="trilinear")
    torch.testing.assert_close(out, expected)
    # The hook is gone: the model is unchanged afterwards.
    torch.testing.assert_close(model(x)[0, 1], reference)


# ---------------------------------------------------------------- EigenCAM


def test_eigen_cam_is_the_first_principal_component_projection():
    model, x = _model(ConvGap, channels=5), _x()
    out, details, count = _run("eigen_cam", model, x, relu=False)
    a = model.features(x)[0].reshape(5, -1).T.double().numpy()  # (positions, channels)
    centred = a - a.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    first = vt[0] if vt[0].sum() >= 0 else -vt[0]
    expected = (centred @ first).reshape(6, 6, 6)
    np.testing.assert_allclose(out[0, 0].numpy(), expected, rtol=1e-4, atol=1e-5)
    assert details["explained_variance"] == pytest.approx(s[0] ** 2 / (s**2).sum(), rel=1e-5)
    assert details["class_agnostic"] is True
    assert (count.forward, count.backward) == (1, 0)
    # No class enters: both targets give the same map.
    torch.testing.assert_close(out, _run("eigen_cam", model, x, target=0, relu=False)[0])
    assert _run("eigen_cam", model, x)[0].min() >= 0


# ---------------------------------------------------------------- all variants


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_runs_on_a_2d_model(name):
    model, x = _model(ConvGap, dims=2), _x((6, 5))
    with torch.no_grad():
        model.fc.weight[1] = model.fc.weight[1].abs()  # class 1 has evidence to show
    out, details, _ = _run(name, model, x)
    assert out.shape == (1, 1, 6, 5) and torch.isfinite(out).all() and out.max() > 0
    assert details["upsampling"].startswith("bilinear")
    if name == "hires_cam":
        a = model.features(x).detach().requires_grad_()
        (g,) = torch.autograd.grad(model.fc(a.mean(dim=(2, 3)))[0, 1], a)
        torch.testing.assert_close(out, (g * a).sum(1, keepdim=True).clamp(min=0))


@pytest.mark.parametrize("name", VARIANTS)
def test_a_wrong_layer_is_named(name):
    key = "layers" if name == "layer_cam" else "layer"
    value = ["conv9"] if name == "layer_cam" else "conv9"
    with pytest.raises(MethodError, match=r"'conv9' is not a module.*layers are: conv"):
        _run(name, _model(), _x(), **{key: value})


def test_variants_are_registered_with_costs():
    costs = {
        name: registry.find(name).cost(registry.find(name).params_model()) for name in VARIANTS
    }
    assert costs == {
        "hires_cam": "1 fwd + 1 bwd",
        "xgrad_cam": "1 fwd + 1 bwd",
        "layer_cam": "1 fwd + 1 bwd",
        "score_cam": "1 + one fwd per channel of the layer",
        "ablation_cam": "1 + one fwd per channel of the layer",
        "eigen_cam": "1 fwd",
    }
    assert all(registry.find(n).family == "cam" and registry.find(n).needs_module for n in VARIANTS)
    # Score-CAM fills the masked-out part with the background by default (see the README).
    assert registry.find("score_cam").params_model().baseline == "min"


def test_bad_variant_parameters_are_config_errors(tmp_path):
    from xaimed.config import load_config

    (tmp_path / "m.pt").write_bytes(b"x")
    config = {
        "model": {"torchscript": "m.pt"},
        "methods": [
            {"name": "layer_cam", "params": {"layers": []}},
            {"name": "layer_cam", "params": {"layers": ["a", "a"]}},
            {"name": "layer_cam", "params": {"fusion": "sum"}},
            {"name": "score_cam", "params": {"layers": ["a"]}},
        ],
    }
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = "\n".join(info.value.problems)
    assert "methods[0].params.layers" in problems
    assert "methods[1].params: layers must be distinct" in problems
    assert "methods[2].params.fusion: input should be 'mean' or 'max', got 'sum'" in problems
    assert "methods[3].params.layers: unknown key 'layers'; did you mean 'layer'?" in problems


def test_explain_writes_every_variant_on_the_source_grid(tmp_path, make_config):
    from xaimed.pipeline import explain

    image = tmp_path / "case.nii.gz"
    write_nifti(image, blob_volume((12, 10, 8)), oblique_affine((1.5, 2.0, 3.0), "LPS"))
    methods = [{"name": n} for n in VARIANTS if n != "layer_cam"]
    methods.append({"name": "layer_cam", "params": {"layers": ["conv", "relu"]}})
    result = explain(image, make_config(methods=methods), tmp_path / "out")
    rows = {row["method"]: row for row in result.rows}
    assert set(rows) == set(VARIANTS)
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row.get("error"))
        written = nib.load(row["nifti"])
        assert written.shape == (12, 10, 8)
        np.testing.assert_allclose(written.affine, nib.load(image).affine)
        sidecar = json.loads(Path(row["sidecar"]).read_text())
        assert sidecar["method_details"]["upsampling"].startswith("trilinear"), name
        assert np.isfinite(np.asarray(written.dataobj)).all()


def test_score_cam_background_fill_finds_the_sample_lesions(tmp_path):
    # The README's measurement: on the sample study's lesion cases the background fill (the
    # default) localises the lesion; the paper's input-times-mask fills z-scored inputs with the
    # image mean, which the sample model scores as lesion everywhere, and the map misses it.
    import csv

    import xaimed
    from xaimed.config import updated

    sample = ROOT / "sample_data"
    with (sample / "labels.csv").open() as fh:
        lesions = [row["case_id"] for row in csv.DictReader(fh) if row["label"] == "1"]
    folder = tmp_path / "in"
    folder.mkdir()
    for case in lesions:
        (folder / f"{case}.nii.gz").write_bytes((sample / "images" / f"{case}.nii.gz").read_bytes())
    config = xaimed.load_config(ROOT / "configs" / "sample.yaml")
    methods = [
        {"name": "score_cam", "id": f"score_cam_{fill}", "params": {"baseline": fill}}
        for fill in ("min", "zero")
    ]
    config = updated(
        config, {"runtime": {"device": "cpu"}, "outputs": {"png": False}, "methods": methods}
    )
    ratios: dict[str, list[float]] = {"score_cam_min": [], "score_cam_zero": []}
    for row in xaimed.explain(folder, config, tmp_path / "out").rows:
        assert row["status"] == "ok", row["error"]
        attribution = nib.load(row["nifti"]).get_fdata()
        mask = np.asarray(nib.load(sample / "masks" / f"{row['case_id']}_lesion.nii.gz").dataobj)
        inside, outside = attribution[mask > 0], attribution[mask == 0]
        ratios[row["method"]].append(float(np.abs(inside).mean() / np.abs(outside).mean()))
    assert len(ratios["score_cam_min"]) == 3
    assert min(ratios["score_cam_min"]) > 3, ratios
    assert min(ratios["score_cam_zero"]) < 1, ratios
