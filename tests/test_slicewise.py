"""Slice-wise (2.5D) models: a 2D network run on every slice, explained as one 3D model."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import TESTS, run_method
from slice_models import Slice2DClassifier, Slice2DSegmenter

from xaimed.config import TargetSection, load_config
from xaimed.engine.targets import TargetReduction
from xaimed.errors import ConfigError
from xaimed.models.slicewise import SliceWise, array_axis
from xaimed.pipeline import explain
from xaimed.sample.phantom import make_phantom

# The sample phantom on a small grid whose array axes point P, S, R: axial slices are axis 1.
SHAPE = (12, 10, 8)
AXCODES = "PSR"


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny convolutions: a second thread only adds contention on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Case:
    case_id = "c"
    mask = None


def _volume() -> torch.Tensor:
    phantom = make_phantom(1, shape=SHAPE, spacing=(6.0, 6.0, 6.0), axcodes=AXCODES, lesion=True)
    x = torch.from_numpy(phantom.image).double()
    return ((x - x.mean()) / x.std())[None, None]


def _net(kind: type[torch.nn.Module], context: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return kind(in_channels=2 * context + 1).eval().double()


def _sliced(net, axis="axial", context=1, reduce="mean", per_call=5) -> SliceWise:
    model = SliceWise(net, world_axis=axis, context=context, reduce=reduce)
    model.use_grid(AXCODES, "c")
    model.slices_per_call = per_call  # several calls per pass, as a small memory budget gives
    return model


def _stack(xs: torch.Tensor, s: int, context: int) -> torch.Tensor:
    """Slice ``s`` of xs (S, P, Q) with its neighbours, the edge slice repeated, by hand."""
    last = xs.shape[0] - 1
    return torch.stack([xs[min(max(s + o, 0), last)] for o in range(-context, context + 1)])


def test_world_axes_resolve_to_array_axes_from_the_orientation():
    assert [array_axis(a, "PSR") for a in ("axial", "coronal", "sagittal")] == [1, 0, 2]
    assert [array_axis(a, "LPS") for a in ("axial", "coronal", "sagittal")] == [2, 1, 0]
    assert [array_axis(a, "IRA") for a in ("axial", "coronal", "sagittal")] == [0, 2, 1]


def test_edge_slices_repeat_the_edge_as_their_missing_neighbours():
    x = _volume()
    model = _sliced(_net(Slice2DClassifier, 1))
    xs = model.moved(x)[0, 0]  # (S, P, Q), axial slices first
    first, last = torch.tensor([0]), torch.tensor([xs.shape[0] - 1])
    zero = torch.tensor([0])
    got_first = model.stacks(model.moved(x), zero, first)[0]
    got_last = model.stacks(model.moved(x), zero, last)[0]
    assert torch.equal(got_first, torch.stack([xs[0], xs[0], xs[1]]))
    assert torch.equal(got_last, torch.stack([xs[-2], xs[-1], xs[-1]]))


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_saliency_equals_per_slice_gradients_computed_by_hand(reduce):
    x = _volume()
    net = _net(Slice2DClassifier, 1)
    attribution, _, count = run_method("saliency", _sliced(net, reduce=reduce), x, target=1)
    xs = x[0, 0].movedim(1, 0)  # axial = array axis 1
    scores, grads = [], []
    for s in range(xs.shape[0]):
        stack = _stack(xs, s, 1)[None].clone().requires_grad_(True)
        score = net(stack)[0, 1]
        scores.append(float(score.detach()))
        grads.append(torch.autograd.grad(score, stack)[0][0])
    # mean: every slice's score weighs 1/S; max: only the best slice's score counts.
    weights = np.full(len(scores), 1 / len(scores))
    if reduce == "max":
        weights = (np.arange(len(scores)) == int(np.argmax(scores))).astype(float)
    expected = torch.zeros_like(xs)
    for s, (grad, weight) in enumerate(zip(grads, weights, strict=True)):
        last = xs.shape[0] - 1
        for j, o in enumerate(range(-1, 2)):
            expected[min(max(s + o, 0), last)] += weight * grad[j]
    torch.testing.assert_close(attribution[0, 0], expected.movedim(0, 1), rtol=1e-9, atol=1e-12)
    assert count.backward == 1


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_segmentation_logits_are_the_slices_logits_stacked_on_the_grid(axis):
    x = _volume()
    net = _net(Slice2DSegmenter, 2)
    out = _sliced(net, axis=axis, context=2)(x)
    a = array_axis(axis, AXCODES)
    xs = x[0, 0].movedim(a, 0)
    with torch.no_grad():
        by_hand = torch.stack([net(_stack(xs, s, 2)[None])[0] for s in range(xs.shape[0])], 1)
    assert out.shape == (1, 2, *SHAPE)
    torch.testing.assert_close(out[0], by_hand.movedim(1, 1 + a), rtol=0, atol=1e-12)


def _scored(net, reduce="mean", **target):
    model = TargetReduction(
        _sliced(net, reduce=reduce), TargetSection.model_validate(target), output="logits"
    )
    model.configure(_volume(), _Case())
    return model


@pytest.mark.parametrize(
    ("kind", "reduce", "target"),
    [
        (Slice2DClassifier, "mean", {}),
        (Slice2DClassifier, "max", {}),
        (Slice2DSegmenter, "mean", {"region": "predicted", "score": "probabilities"}),
        (Slice2DSegmenter, "mean", {"region": "volume", "reduction": "mean"}),
    ],
)
def test_occlusion_reruns_only_touched_slices_and_matches_whole_passes(kind, reduce, target):
    x = _volume()
    model = _scored(_net(kind, 1), reduce, **target)
    assert model.segmentation == (kind is Slice2DSegmenter)
    params = {"window": [4, 2, 4], "stride": [4, 2, 4], "baseline": "zero"}
    plain, plain_details, plain_count = run_method("occlusion", model, x, engine="plain", **params)
    fast, details, count = run_method("occlusion", model, x, engine="auto", **params)
    assert plain_details["engine"] == "plain" and details["engine"] == "slice_incremental"
    scale = float(plain.abs().max())
    assert scale > 0
    assert float((fast - plain).abs().max()) <= 1e-4 * scale
    # A 2-slice window with one neighbour each side touches 4 of 10 axial slices (3 at edges).
    record = details["slice_incremental"]
    windows = plain_details["perturbations"]
    assert record["slices_per_pass"] == 10
    assert record["slices_computed"] == 3 * 2 * (2 * 3 + 3 * 4)
    assert record["slices_computed"] < windows * 10
    assert count.full_pass_equivalent < plain_count.full_pass_equivalent / 2


def test_feature_ablation_and_kernel_shap_use_the_slice_engine_exactly():
    x = _volume()
    model = _scored(_net(Slice2DClassifier, 1))
    grid = {"grouping": {"kind": "grid", "size": [6, 5, 4]}, "baseline": "zero"}
    plain, _, _ = run_method("feature_ablation", model, x, engine="plain", **grid)
    fast, details, _ = run_method("feature_ablation", model, x, engine="auto", **grid)
    assert details["engine"] == "slice_incremental"
    assert float((fast - plain).abs().max()) <= 1e-4 * float(plain.abs().max())
    hidden = torch.nn.Sequential(model)  # no engine recognises it: whole passes
    plain, details, _ = run_method("kernel_shap", hidden, x, samples=24, **grid)
    assert "slice_incremental" not in details
    fast, details, _ = run_method("kernel_shap", model, x, samples=24, **grid)
    assert details["engine"] == "slice_incremental"
    assert float((fast - plain).abs().max()) <= 1e-4 * float(plain.abs().max())


def _config(tmp_path: Path, model: dict, **sections) -> Path:
    config = {
        "model": {"classes": ["no", "yes"], **model},
        "preprocessing": {"intensity": {"kind": "zscore"}},
        "target": {"class": "yes"},
        "methods": [
            {"name": "saliency"},
            {"name": "occlusion", "params": {"window": 4, "stride": 4, "engine": "auto"}},
        ],
        "outputs": {"png": False},
        "runtime": {"device": "cpu", "threads": 1},
        **sections,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _classifier_model(tmp_path: Path, **slicewise) -> dict:
    path = tmp_path / "slice2d.pt"
    torch.save(_net(Slice2DClassifier, 1).float().state_dict(), path)
    return {
        "architecture": "slice_models:Slice2DClassifier",
        "python_path": [str(TESTS)],
        "weights": str(path),
        "slicewise": {"axis": "axial", "context": 1, **slicewise},
    }


def test_explain_runs_a_slice_wise_model_and_records_the_array_axis(tmp_path):
    phantom = make_phantom(1, shape=SHAPE, spacing=(6.0, 6.0, 6.0), axcodes=AXCODES, lesion=True)
    image = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(phantom.image, phantom.affine), image)
    config = _config(tmp_path, _classifier_model(tmp_path, reduce="max"))
    result = explain(image, config, tmp_path / "run")
    assert not result.failed, result.failed
    rows = {row["method"]: row for row in result.rows}
    for row in rows.values():
        record = json.loads(Path(row["sidecar"]).read_text())
        assert record["model"]["class"] == "Slice2DClassifier"
        sliced = record["model"]["slicewise"]
        assert (sliced["axis"], sliced["array_axis"], sliced["orientation"]) == ("axial", 1, "PSR")
        assert (sliced["context"], sliced["edges"], sliced["reduce"]) == (1, "replicate", "max")
        written = nib.load(row["nifti"])
        assert written.shape == SHAPE and np.allclose(written.affine, phantom.affine)
        assert np.abs(np.asarray(written.dataobj)).max() > 0
    occlusion = json.loads(Path(rows["occlusion"]["sidecar"]).read_text())
    assert "slice_incremental" in json.dumps(occlusion)


@pytest.mark.parametrize(
    ("slicewise", "sections", "message"),
    [
        ({"axis": "transverse"}, {}, "axial"),
        ({"axis": "axial", "context": -1}, {}, "context"),
        ({"axis": "axial", "reduce": "sum"}, {}, "reduce"),
        ({"axis": "axial", "stride": 2}, {}, "stride"),
        ({"axis": "axial"}, {"tiling": {"patch_size": [8, 8, 8]}}, "cannot be tiled"),
        ({"axis": "axial"}, {"methods": ["grad_cam"]}, "grad_cam cannot explain a slice-wise"),
        ({"axis": "axial"}, {"methods": ["deeplift"]}, "deeplift cannot explain a slice-wise"),
    ],
)
def test_bad_slicewise_configs_are_refused_at_load(tmp_path, slicewise, sections, message):
    model = _classifier_model(tmp_path)
    model["slicewise"] = slicewise
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, model, **sections))
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_slicewise_needs_a_plain_network(tmp_path):
    folder = tmp_path / "bundle"
    folder.mkdir()
    model = {"monai_bundle": str(folder), "slicewise": {"axis": "axial"}}
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, model))
    assert any("`slicewise` wraps a 2D network" in p for p in caught.value.problems)


def test_engine_incremental_is_refused_with_one_sentence():
    from xaimed.errors import MethodError

    model = _scored(_net(Slice2DClassifier, 1))
    with pytest.raises(MethodError, match="engine: incremental cannot run on this model"):
        run_method("occlusion", model, _volume(), engine="incremental", window=4, stride=4)


def test_an_ensemble_of_slice_wise_members_is_explained(tmp_path):
    phantom = make_phantom(1, shape=SHAPE, spacing=(6.0, 6.0, 6.0), axcodes=AXCODES, lesion=True)
    image = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(phantom.image, phantom.affine), image)
    first = _classifier_model(tmp_path)
    second = {**_classifier_model(tmp_path), "slicewise": {"axis": "coronal"}}
    torch.manual_seed(5)
    second["weights"] = str(tmp_path / "second.pt")
    second["kwargs"] = {"in_channels": 1}
    torch.save(Slice2DClassifier(in_channels=1).state_dict(), second["weights"])
    model = {"ensemble": [{k: v for k, v in m.items() if k != "classes"} for m in (first, second)]}
    config = _config(tmp_path, model, methods=["saliency"])
    result = explain(image, config, tmp_path / "run")
    assert not result.failed, result.failed
    record = json.loads(Path(result.rows[0]["sidecar"]).read_text())
    axes = [(m["axis"], m["array_axis"], m["context"]) for m in record["model"]["slicewise"]]
    assert axes == [("axial", 1, 1), ("coronal", 0, 0)]


def test_slicewise_with_a_2d_model_setting_is_refused_at_load(tmp_path):
    model = _classifier_model(tmp_path)
    model["slicewise"] = {"axis": "axial"}
    model["spatial_dims"] = 2
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, model))
    assert any("remove model.spatial_dims: 2" in p for p in caught.value.problems)


@pytest.mark.parametrize("ensemble", [False, True])
def test_a_2d_image_for_a_slice_wise_model_fails_alone_with_advice_that_loads(tmp_path, ensemble):
    film = tmp_path / "films" / "film.nii.gz"
    film.parent.mkdir()
    nib.save(nib.Nifti1Image(np.ones((12, 10), np.float32), np.eye(4)), film)
    phantom = make_phantom(1, shape=SHAPE, spacing=(6.0, 6.0, 6.0), axcodes=AXCODES, lesion=True)
    nib.save(nib.Nifti1Image(phantom.image, phantom.affine), film.parent / "volume.nii.gz")
    model = _classifier_model(tmp_path)
    if ensemble:
        member = {k: v for k, v in model.items() if k != "classes"}
        model = {"ensemble": [member, member]}
    result = explain(film.parent, _config(tmp_path, model, methods=["saliency"]), tmp_path / "o")
    assert [row["case_id"] for row in result.rows if row["status"] == "ok"] == ["volume"]
    (failure,) = result.failed
    assert failure["error"].startswith(
        "case film: the image is 2D (12, 10), but model.slicewise runs its 2D network"
    )
    assert failure["error"].endswith("remove model.slicewise and set model.spatial_dims: 2.")


def test_a_network_failing_on_the_slices_is_named_with_the_slices_it_was_given(tmp_path):
    phantom = make_phantom(1, shape=SHAPE, spacing=(6.0, 6.0, 6.0), axcodes=AXCODES, lesion=True)
    image = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(phantom.image, phantom.affine), image)
    # Weights for context 1 (3 channels) under context 2: the network gets 5 channels.
    model = _classifier_model(tmp_path, context=2)
    result = explain(image, _config(tmp_path, model, methods=["saliency"]), tmp_path / "o")
    (failure,) = result.failed
    assert failure["error"].startswith(
        "case case: the 2D network of model.slicewise fails on this case's axial slices of "
        "12 x 8 pixels (array axis 1 of the input (1, 1, 12, 10, 8), oriented PSR; "
    )
    assert failure["error"].endswith("check model.slicewise.axis and preprocessing.")
