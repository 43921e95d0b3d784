"""MONAI bundles built in the test: the bundle's preprocessing, inferer and inverse, via MONAI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import blob_volume, oblique_affine, write_nifti

monai = pytest.importorskip("monai", reason="MONAI is not installed (a dev dependency)")

from xaimed.config import load_config  # noqa: E402
from xaimed.errors import ModelError  # noqa: E402
from xaimed.io.nifti import read_nifti  # noqa: E402
from xaimed.model import load_model  # noqa: E402
from xaimed.pipeline import explain  # noqa: E402

UNET = {
    "_target_": "monai.networks.nets.UNet",
    "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
    "channels": [4, 8], "strides": [2], "num_res_units": 0,
}  # fmt: skip


def _preprocessing(extra: list[dict] | None = None) -> dict:
    """A spleen-CT-like chain: load, channel first, RAS, resample, CT window."""
    return {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [1.8, 1.8, 2.5],
             "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0, "a_max": 200,
             "b_min": 0.0, "b_max": 1.0, "clip": True},
            *(extra or []),
        ],
    }  # fmt: skip


def make_bundle(root: Path, *, extra: list[dict] | None = None, payload: object = None) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    config = {
        "imports": ["$import monai"],
        "network_def": UNET,
        "preprocessing": _preprocessing(extra),
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [8, 8, 8],
                    "sw_batch_size": 2, "overlap": 0.25, "mode": "gaussian"},
    }  # fmt: skip
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    network = monai.networks.nets.UNet(**{k: v for k, v in UNET.items() if k != "_target_"})
    state = network.state_dict() if payload is None else {**network.state_dict(), "x": payload}
    torch.save(state, root / "models" / "model.pt")
    return root


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bundle_case")
    return write_nifti(tmp / "case.nii.gz", blob_volume(), oblique_affine(), dtype=np.float32)


def _config(tmp_path: Path, bundle: Path) -> Path:
    config = {
        "model": {"monai_bundle": str(bundle), "classes": ["background", "spleen"]},
        "target": {"class": "spleen", "region": "predicted"},
        "methods": [
            {"name": "input_x_gradient"},
            {"name": "grad_cam"},
            {"name": "occlusion", "params": {"window": [4, 4, 4], "stride": [4, 4, 4]}},
        ],
        "outputs": {"png": False},
        "runtime": {"device": "cpu", "threads": 1},
    }
    path = tmp_path / "bundle.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run_with_monai(bundle: Path, case: Path) -> tuple[torch.Tensor, np.ndarray]:
    """The bundle run by MONAI alone: parser, preprocessing, inferer, argmax, inverse."""
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    network.eval()
    preprocessing = parser.get_parsed_content("preprocessing")
    image = preprocessing({"image": str(case)})["image"]
    with torch.no_grad():
        logits = parser.get_parsed_content("inferer")(image[None], network)[0]
    labels = MetaTensor(logits.argmax(0, keepdim=True).float(), meta=image.meta)
    labels.applied_operations = image.applied_operations
    back = preprocessing.inverse({"image": labels})["image"]
    return logits.as_tensor(), np.asarray(back[0])


def test_prediction_is_the_bundles(tmp_path, case):
    bundle = make_bundle(tmp_path / "bundle")
    config = load_config(_config(tmp_path, bundle))
    model = load_model(config.model, torch.device("cpu"))
    prepared = model.prepare(read_nifti(case))
    with torch.no_grad():
        ours = model.module(torch.from_numpy(prepared.array)[None])[0]
    theirs, _ = _run_with_monai(bundle, case)
    torch.testing.assert_close(ours, theirs)


@pytest.fixture(scope="module")
def explained(tmp_path_factory, case) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("bundle_explain")
    bundle = make_bundle(tmp / "bundle")
    result = explain(case, _config(tmp, bundle), tmp / "out")
    assert not result.failed, result.failed
    return {row["method"]: row for row in result.rows}


@pytest.mark.parametrize("method", ["input_x_gradient", "grad_cam", "occlusion"])
def test_maps_come_back_through_monais_inverse(explained, case, method):
    source = nib.load(case)
    img = nib.load(explained[method]["nifti"])
    assert img.shape == source.shape
    np.testing.assert_allclose(img.affine, source.affine, atol=1e-5)
    assert np.abs(img.get_fdata()).max() > 0
    record = json.loads(Path(explained[method]["sidecar"]).read_text())
    assert record["model"]["kind"] == "monai_bundle"
    assert record["model"]["inferer"] == "SlidingWindowInferer"
    assert "Spacingd" in record["preprocessing"][-1]["transforms"]


def test_inverse_puts_the_bundles_labels_where_monai_does(tmp_path, case):
    bundle = make_bundle(tmp_path / "bundle")
    model = load_model(load_config(_config(tmp_path, bundle)).model, torch.device("cpu"))
    prepared = model.prepare(read_nifti(case))
    with torch.no_grad():
        logits = model.module(torch.from_numpy(prepared.array)[None])[0]
    labels = logits.argmax(0, keepdim=True).float().numpy()
    ours = prepared.steps[-1].invert(labels)[0]
    _, theirs = _run_with_monai(bundle, case)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_non_invertible_preprocessing_is_refused_naming_the_transform(tmp_path, case):
    # A Lambdad that crops moves voxels and has no inverse.
    crop = {"_target_": "Lambdad", "keys": "image", "func": "$lambda x: x[:, 1:, 1:, 1:]"}
    bundle = make_bundle(tmp_path / "bundle", extra=[crop])
    result = explain(case, _config(tmp_path, bundle), tmp_path / "out")
    assert result.failed and all("Lambdad" in row["error"] for row in result.failed)
    assert all("has no inverse" in row["error"] for row in result.failed)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bundle_weights_that_run_code_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    bundle = make_bundle(tmp_path / "bundle", payload=_Payload(marker))
    config = load_config(_config(tmp_path, bundle))
    with pytest.raises(ModelError, match="allow_pickle"):
        load_model(config.model, torch.device("cpu"))
    assert not marker.exists()
