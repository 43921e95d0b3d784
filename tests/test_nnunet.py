"""nnU-Net v2 results folders: the explained prediction is nnUNetPredictor's, maps land home.

The results folder is made once per session by nnunetv2's own planning, preprocessing and
``run_training()`` (tests/nnunet_fixture.py, in a subprocess because nnunetv2 reads its folders
from the environment at import).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, TESTS

# nnU-Net sizes its thread pools from this when first imported (default 8, too many for CI).
os.environ.setdefault("nnUNet_def_n_proc", "1")
pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (scripts/install_nnunet.sh)")

from nnunet_fixture import blob_case

from xaimed.config import load_config
from xaimed.errors import ModelError
from xaimed.io.nifti import read_nifti
from xaimed.model import load_model
from xaimed.models.checkpoint import load_checkpoint
from xaimed.pipeline import explain

SPACING = (0.8, 1.1, 2.5)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as nnUNetPredictor uses here: two threads on a busy 2-core machine are
    many times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def results_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two folds of a tiny nnU-Net trained by nnU-Net (a minute or two on 2 cores)."""
    # Kept between sessions under the repository's .cache, keyed by the fixture script and the
    # nnunetv2 version, so that a change to either rebuilds it.
    from importlib.metadata import version

    script = TESTS / "nnunet_fixture.py"
    key = hashlib.sha256(script.read_bytes() + version("nnunetv2").encode()).hexdigest()[:12]
    work = ROOT / ".cache" / f"nnunet-fixture-{key}"
    marker = work / "results_folder.txt"
    if not marker.is_file():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        done = subprocess.run(
            [sys.executable, str(script), str(work), "20"],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        marker.write_text(done.stdout.strip().splitlines()[-1])
    return Path(marker.read_text())


@pytest.fixture(scope="session")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A case larger than the patch (several windows), with a zero border and an offset."""
    image, _ = blob_case((40, 34, 16), SPACING, seed=7)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = [5.0, -3.0, 2.0]
    path = tmp_path_factory.mktemp("nnunet_case") / "case.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(path))
    return path


def _config(tmp_path: Path, folder: Path, **nnunet) -> Path:
    config = {
        "model": {"nnunet": {"folder": str(folder), "folds": [0, 1], **nnunet}},
        "target": {"class": "blob"},
        "methods": [
            {"name": "input_x_gradient"},
            {"name": "grad_cam"},
            {"name": "occlusion", "params": {"window": [10, 12, 10], "stride": [10, 12, 10]}},
        ],
        "outputs": {"png": False},
        "runtime": {"device": "cpu", "threads": 1},
    }
    path = tmp_path / "nnunet.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _predictor(folder: Path, folds: tuple, mirroring: bool):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
        perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False,
    )  # fmt: skip
    predictor.initialize_from_trained_model_folder(str(folder), folds, "checkpoint_final.pth")
    return predictor


def _same_labels_but_ties(mine: np.ndarray, theirs: np.ndarray, probabilities: np.ndarray):
    """The same labels, except at voxels where our two most probable classes are within 0.02:
    there, float rounding (nnU-Net's float16 window sums and resampling, ours in float32) may
    tip the argmax either way. Such voxels are a few in ten thousand of a trained model's."""
    differ = mine != theirs
    top = np.sort(probabilities, axis=0)
    margin = top[-1] - top[-2]
    assert differ.mean() < 1e-3, f"{differ.sum()} of {differ.size} voxels differ"
    assert np.all(margin[differ] < 0.02), margin[differ]


@pytest.mark.parametrize(("folds", "mirroring"), [([0, 1], False), ([0], True)])
def test_prediction_is_nnunet_predictors(tmp_path, results_folder, case, folds, mirroring):
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO
    from nnunetv2.inference.export_prediction import (
        convert_predicted_logits_to_segmentation_with_correct_shape as export,
    )

    config = load_config(_config(tmp_path, results_folder, folds=folds, mirroring=mirroring))
    model = load_model(config.model, torch.device("cpu"))
    prepared = model.prepare(read_nifti(case))
    with torch.no_grad():
        ours = model.module(torch.from_numpy(prepared.array)[None])[0]
    predictor = _predictor(results_folder, tuple(folds), mirroring)
    # nnU-Net's own path from the file: its reader, preprocessing, sliding window and export.
    data, properties = NibabelIO().read_images([str(case)])
    theirs = predictor.predict_single_npy_array(data, properties)
    step = prepared.steps[-1]
    mine, probabilities = export(ours, step.plans_manager, step.configuration_manager,
                                 predictor.label_manager, dict(step.properties),
                                 return_probabilities=True)  # fmt: skip
    assert theirs.sum() > 0  # the model segments something: the comparison is not trivial
    _same_labels_but_ties(mine, theirs, probabilities)
    # Without gradients the window sums in float16 in nnU-Net's order: the very same logits.
    reference = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(prepared.array))
    assert torch.equal(ours, reference.float())
    # With gradients it sums in float32: the same values except at the volume's corners, where
    # nnU-Net's float16 Gaussian weights underflow and its logits are coarse.
    with torch.enable_grad():
        graded = model.module(torch.from_numpy(prepared.array)[None].requires_grad_())[0]
    diff = (graded.detach() - ours).abs().flatten()
    assert float(diff.quantile(0.99)) < 0.02 * float(ours.abs().max())


def test_maps_come_back_like_nnunets_logits(results_folder, case, tmp_path):
    """The inverse sends the logits home as nnU-Net's export does: same argmax, source grid."""
    config = load_config(_config(tmp_path, results_folder))
    model = load_model(config.model, torch.device("cpu"))
    volume = read_nifti(case)
    prepared = model.prepare(volume)
    with torch.no_grad():
        logits = model.module(torch.from_numpy(prepared.array)[None])[0].numpy()
    home = prepared.steps[-1].invert(logits)
    assert home.shape[1:] == volume.array.shape
    theirs = _predictor(results_folder, (0, 1), False).predict_single_npy_array(
        *__import__("nnunetv2.imageio.nibabel_reader_writer", fromlist=["NibabelIO"])
        .NibabelIO()
        .read_images([str(case)])
    )
    # nnU-Net's segmentation is in its (reversed) axis order.
    probabilities = torch.softmax(torch.from_numpy(home), 0).numpy()
    _same_labels_but_ties(home.argmax(0), theirs.transpose(2, 1, 0), probabilities)


@pytest.fixture(scope="module")
def explained(results_folder, case, tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("nnunet_explain")
    result = explain(case, _config(tmp, results_folder), tmp / "out")
    assert not result.failed, result.failed
    return {row["method"]: row for row in result.rows}


@pytest.mark.parametrize("method", ["input_x_gradient", "grad_cam", "occlusion"])
def test_ensemble_of_folds_explains_on_the_source_grid(explained, case, method):
    source = nib.load(case)
    img = nib.load(explained[method]["nifti"])
    assert img.shape == source.shape
    np.testing.assert_allclose(img.affine, source.affine, atol=1e-5)
    data = img.get_fdata()
    assert np.abs(data).max() > 0
    # The zero slabs (first axis, 2 voxels each side) are cropped away by nnU-Net before the
    # network: nothing there can influence the output, so the map is exactly 0 there.
    assert np.all(data[:2] == 0) and np.all(data[-2:] == 0)
    record = json.loads(Path(explained[method]["sidecar"]).read_text())
    assert record["model"]["kind"] == "nnunet"
    assert record["model"]["folds"] == ["fold_0", "fold_1"]
    assert record["model"]["sliding_window"]["patch_size"] == [12, 24, 20]
    assert record["prediction"]["predicted_class"] == "blob"
    assert record["preprocessing"][-1]["step"] == "nnunet"
    spread = record["ensemble"]
    assert spread["members"] == 2
    std = nib.load(spread["member_std_nifti"])
    assert std.shape == source.shape and std.get_fdata().max() > 0


def test_a_real_training_checkpoint_loads_without_pickle(results_folder):
    # nnU-Net's logging holds numpy scalars, which plain weights_only=True refuses.
    path = results_folder / "fold_0" / "checkpoint_final.pth"
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)
    loaded = load_checkpoint(path, allow_pickle=False, key="model.nnunet")
    assert "network_weights" in loaded and loaded["logging"]


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_runs_code_is_refused(results_folder, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(results_folder, folder)
    marker = tmp_path / "pwned"
    good = torch.load(folder / "fold_1" / "checkpoint_final.pth", weights_only=False)
    torch.save({**good, "logging": _Payload(marker)}, folder / "fold_1" / "checkpoint_final.pth")
    config = load_config(_config(tmp_path, folder))
    with pytest.raises(ModelError, match="allow_pickle"):
        load_model(config.model, torch.device("cpu"))
    assert not marker.exists()


def test_evaluate_reopens_an_nnunet_run_with_its_own_preprocessing(results_folder, case, tmp_path):
    """evaluate opens each case through the model's own preprocessing (nnU-Net's crop,
    resampling and normalisation), as explain did: a re-explanation at almost no noise gives
    back the stored map, and the curves run on nnU-Net's grid."""
    from xaimed.evaluate import evaluate

    path = _config(tmp_path, results_folder)
    config = yaml.safe_load(path.read_text())
    config["methods"] = [{"name": "input_x_gradient"}]
    config["evaluate"] = {
        "metrics": ["faithfulness", "robustness"],
        "faithfulness": {"steps": 3},
        "robustness": {"samples": 1, "radius": 1e-6},
    }
    path.write_text(yaml.safe_dump(config))
    run = explain(case, path, tmp_path / "out")
    assert not run.failed, run.failed
    result = evaluate(tmp_path / "out")
    assert result.failures == []
    # A case prepared otherwise (the config's empty preprocessing) would not even fit the model;
    # a map of another input would differ by its whole size. Noise of 1e-6 of the range moves
    # this map by a few hundredths at most (gradients summed over overlapping windows; 0.02
    # was measured once).
    assert result.values("max_sensitivity")["case"] < 0.05
    curve = next(c for c in result.curves if c["kind"] == "deletion")
    assert curve["fractions"][0] == 0 and curve["fractions"][-1] == 1
    assert curve["scores"][0] != curve["scores"][-1]
