"""Fixed-size models: preprocessing.resize to the model's shape and back, probabilities out."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import TESTS, blob_volume, oblique_affine, write_nifti
from seg_models import FixedSizeSeg

from xaimed.config import PreprocessingSection, ResizeStep
from xaimed.io.nifti import read_nifti
from xaimed.pipeline import explain
from xaimed.preprocess import prepare


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("resize")
    torch.manual_seed(0)
    model = FixedSizeSeg().eval()
    torch.save(model.state_dict(), tmp / "fixed.pt")
    torch.jit.save(torch.jit.script(model), tmp / "fixed.ts")
    image = write_nifti(tmp / "case.nii.gz", blob_volume(), oblique_affine(), dtype=np.float32)
    return {"dir": tmp, "pt": tmp / "fixed.pt", "ts": tmp / "fixed.ts", "image": image}


def _config(files: dict[str, Path], model: dict, methods: list[dict], name: str) -> Path:
    config = {
        "model": {**model, "input_size": [16, 16, 16], "output": "probabilities",
                  "classes": ["background", "a", "b"]},
        "preprocessing": {"intensity": {"kind": "zscore"},
                          "resize": {"size": "model", "mode": "area"}},
        "target": {"class": "a", "region": "volume", "score": "probabilities"},
        "methods": methods,
        "outputs": {"png": False},
        "runtime": {"device": "cpu", "threads": 1},
    }  # fmt: skip
    path = files["dir"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("mode", ["nearest", "linear", "area"])
def test_resize_is_torchs_and_its_inverse_restores_the_grid(files, mode):
    volume = read_nifti(files["image"])
    config = PreprocessingSection(resize=ResizeStep(size=(16, 12, 10), mode=mode))
    prepared = prepare(volume, config)
    torch_mode = {"linear": "trilinear"}.get(mode, mode)
    extra = {"align_corners": False} if mode == "linear" else {}
    expected = F.interpolate(
        torch.from_numpy(volume.array.astype(np.float32))[None, None], size=(16, 12, 10),
        mode=torch_mode, **extra,
    )[0].numpy()  # fmt: skip
    np.testing.assert_allclose(prepared.array, expected, rtol=1e-6)
    # The model grid covers the same field of view: the centres coincide in world space.
    src_centre = volume.affine @ [*(np.array(volume.array.shape) - 1) / 2, 1]
    new_centre = prepared.affine @ [*(np.array([16, 12, 10]) - 1) / 2, 1]
    np.testing.assert_allclose(src_centre, new_centre, atol=1e-6)
    # A map goes back onto the source shape and affine; a smooth map comes back nearly itself.
    ramp = np.broadcast_to(np.linspace(0, 1, 16)[:, None, None], (16, 12, 10))[None]
    back = prepared.invert_map(ramp)
    assert back.array.shape == volume.array.shape
    np.testing.assert_array_equal(back.affine, volume.affine)
    i = np.arange(volume.array.shape[0])
    truth = np.clip(((i + 0.5) * 16 / volume.array.shape[0] - 0.5) / 15, 0, 1)
    np.testing.assert_allclose(back.array[:, 5, 5], truth, atol=1e-5)


def test_fixed_size_torchscript_model_explains_on_the_source_grid(files):
    methods = [
        {"name": "input_x_gradient"},
        {"name": "occlusion", "params": {"window": [4, 4, 4], "stride": [4, 4, 4]}},
    ]
    result = explain(files["image"], _config(files, {"torchscript": str(files["ts"])}, methods,
                                               "ts"), files["dir"] / "ts")  # fmt: skip
    assert not result.failed, result.failed
    _check(result.rows, files)


def test_fixed_size_model_explains_with_cam(files):
    model = {"architecture": "seg_models:FixedSizeSeg", "python_path": [str(TESTS)],
             "weights": str(files["pt"])}  # fmt: skip
    result = explain(files["image"], _config(files, model, [{"name": "grad_cam"}], "cam"),
                     files["dir"] / "cam")  # fmt: skip
    assert not result.failed, result.failed
    _check(result.rows, files)


def _check(rows: list[dict], files: dict[str, Path]) -> None:
    source = nib.load(files["image"])
    volume = read_nifti(files["image"])
    for row in rows:
        img = nib.load(row["nifti"])
        assert img.shape == source.shape
        np.testing.assert_allclose(img.affine, source.affine, atol=1e-5)
        assert np.abs(img.get_fdata()).max() > 0
        record = json.loads(Path(row["sidecar"]).read_text())
        assert record["preprocessing"][-1] == {
            "step": "resize", "mode": "area", "from_shape": [20, 18, 14], "to_shape": [16, 16, 16],
        }  # fmt: skip
        # The explained prediction is the model's own on the resized input: the mean
        # probability of label "a" over the volume (target.region: volume, reduction: sum).
        data = volume.array.astype(np.float32)
        x = torch.from_numpy((data - data.mean()) / data.std())[None, None]
        x = F.interpolate(x, size=(16, 16, 16), mode="area")
        with torch.no_grad():
            probs = torch.jit.load(str(files["ts"]))(x)
        expected = probs[0].flatten(1).sum(-1).numpy()
        got = np.array(record["prediction"]["probabilities"])
        np.testing.assert_allclose(got, expected, rtol=1e-4)
