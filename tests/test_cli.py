"""The xaimed command end to end, in-process: outputs, manifest, bad input, exit statuses."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT, blob_volume, oblique_affine, write_nifti
from typer.testing import CliRunner

from xaimed import __version__
from xaimed.cli import app
from xaimed.writers.manifest import read_manifest

runner = CliRunner()


def _invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result, result.stdout + (result.stderr or "")


def _manifest(out: Path) -> list[dict[str, str]]:
    return read_manifest(out / "manifest.csv")  # output paths resolved against the run


@pytest.fixture
def cases(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    write_nifti(folder / "lps.nii.gz", blob_volume(), oblique_affine((1.5, 2.0, 3.0), "LPS"))
    write_nifti(
        folder / "sub" / "las.nii",
        blob_volume(seed=2),
        oblique_affine((0.9, 0.9, 2.5), "LAS"),
        qform_code=2,
        sform_code=0,
    )
    return folder


def test_explain_writes_maps_on_the_source_grid(tmp_path, cases, make_config):
    config = make_config(
        preprocessing={
            "reorient": "RAS",
            "resample": {"spacing": [2.0, 2.0, 2.0]},
            "intensity": {"kind": "zscore"},
        },
        methods=["saliency", {"name": "integrated_gradients", "params": {"steps": 4}}],
        outputs={"png": True},
    )
    out = tmp_path / "out"
    result, text = _invoke("explain", cases, "--config", config, "--out", out, "--quiet")
    assert result.exit_code == 0, text
    rows = _manifest(out)
    assert [(r["case_id"], r["method"], r["status"]) for r in rows] == [
        ("lps", "saliency", "ok"),
        ("lps", "integrated_gradients", "ok"),
        ("las", "saliency", "ok"),
        ("las", "integrated_gradients", "ok"),
    ]
    for row in rows:
        src, out_img = nib.load(row["source"]), nib.load(row["nifti"])
        assert out_img.shape == src.shape
        np.testing.assert_array_equal(out_img.affine, src.affine)
        for getter in ("get_qform", "get_sform"):
            assert (
                getattr(out_img.header, getter)(coded=True)[1]
                == getattr(src.header, getter)(coded=True)[1]
            )
        assert out_img.get_data_dtype() == np.float32
        assert Path(row["png"]).stat().st_size > 10_000
        assert float(row["wall_s"]) > 0
        sidecar = json.loads(Path(row["sidecar"]).read_text())
        assert sidecar["method"]["name"] == row["method"]
        assert (
            sidecar["target"]["name"] == row["target"] == sidecar["prediction"]["predicted_class"]
        )
        assert len(sidecar["model"]["sha256"]) == 64
        assert [s["step"] for s in sidecar["preprocessing"]] == [
            "channels",
            "reorient",
            "resample",
            "intensity",
        ]
        assert sidecar["native_map"]["spacing_mm"] == [2.0, 2.0, 2.0]
        assert sidecar["passes"]["forward"] == int(row["forward_passes"]) >= 1
        assert sidecar["software"]["xaimed"] == __version__
        data = out_img.get_fdata()
        assert sidecar["map"]["max"] == pytest.approx(data.max(), rel=1e-6)
    ig = json.loads(Path(rows[1]["sidecar"]).read_text())
    assert ig["method"]["params"]["steps"] == 4 and ig["passes"]["forward"] == 4


def test_method_option_replaces_the_config_methods(tmp_path, cases, make_config):
    out = tmp_path / "out"
    result, text = _invoke(
        "explain",
        cases / "lps.nii.gz",
        "-c",
        make_config(),
        "-o",
        out,
        "-m",
        "input_x_gradient",
        "-m",
        "smoothgrad",
        "--device",
        "cpu",
        "-q",
    )
    assert result.exit_code == 0, text
    assert [r["method"] for r in _manifest(out)] == ["input_x_gradient", "smoothgrad"]
    sidecar = json.loads((out / "lps" / "lps_smoothgrad.json").read_text())
    assert sidecar["method"]["params"] == {
        "samples": 25,
        "noise": 0.15,
        "internal_batch_size": None,
    }


def test_target_all_writes_one_map_per_class(tmp_path, cases, make_config):
    out = tmp_path / "out"
    result, text = _invoke(
        "explain",
        cases / "lps.nii.gz",
        "-c",
        make_config(target={"class": "all"}),
        "-o",
        out,
    )
    assert result.exit_code == 0, text
    rows = _manifest(out)
    assert [r["target"] for r in rows] == ["no", "yes", "dominant"]
    assert {Path(r["nifti"]).name for r in rows} == {
        "lps_saliency_no.nii.gz",
        "lps_saliency_yes.nii.gz",
        "lps_saliency_dominant.nii.gz",
    }


def test_bad_inputs_fail_alone_with_a_clear_message(tmp_path, cases, make_config):
    write_nifti(cases / "flat.nii.gz", np.zeros((10, 12)), np.eye(4))
    write_nifti(cases / "multi.nii.gz", np.zeros((10, 12, 8, 3)), np.eye(4))
    nan = blob_volume()
    nan[1, 1, 1] = np.nan
    write_nifti(cases / "nan.nii.gz", nan, np.eye(4), dtype=np.float32)
    whole = gzip.decompress((cases / "lps.nii.gz").read_bytes())
    (cases / "truncated.nii.gz").write_bytes(gzip.compress(whole[: len(whole) // 2]))
    out = tmp_path / "out"
    result, text = _invoke("explain", cases, "-c", make_config(), "-o", out, "-q")
    assert result.exit_code == 1
    rows = {r["case_id"]: r for r in _manifest(out)}
    assert rows["lps"]["status"] == rows["las"]["status"] == "ok"
    assert Path(rows["las"]["nifti"]).is_file()
    expected = {
        "flat": "case flat: the image is 2D (10, 12) but the model is 3D; set model.spatial_dims",
        "multi": "multi.nii.gz: expected a 3D volume, got 4D",
        "nan": "nan.nii.gz: 1 voxels are NaN or infinite",
        "truncated": "truncated.nii.gz: voxel data cannot be read",
    }
    for case_id, message in expected.items():
        assert rows[case_id]["status"] == "failed"
        assert message in rows[case_id]["error"]
        assert message in " ".join(text.split())
        assert not (out / case_id).exists()


def test_checkpoint_that_does_not_fit_stops_with_status_2(tmp_path, cases, make_config, tiny_state):
    config = make_config(
        model={
            "architecture": "tiny_models:TinyCNN",
            "python_path": [str(Path(__file__).parent)],
            "weights": str(tiny_state),
            "kwargs": {"width": 7},
        }
    )
    result, text = _invoke("explain", cases, "-c", config, "-o", tmp_path / "o", "-q")
    assert result.exit_code == 2
    assert "does not fit model.architecture tiny_models:TinyCNN" in " ".join(text.split())


def test_wrong_input_size_fails_the_case(tmp_path, cases, make_config, tiny_state):
    config = make_config(
        model={
            "architecture": "tiny_models:TinyCNN",
            "python_path": [str(Path(__file__).parent)],
            "weights": str(tiny_state),
            "input_size": [16, 16, 16],
        }
    )
    result, _ = _invoke("explain", cases, "-c", config, "-o", tmp_path / "o", "-q")
    assert result.exit_code == 1
    error = _manifest(tmp_path / "o")[0]["error"]
    assert "case lps: after preprocessing the volume is (20, 18, 14)" in error
    assert "model.input_size is (16, 16, 16)" in error


def test_invalid_config_lists_every_problem(tmp_path, cases):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {torchscript: none.pt, clases: [a]}\nmethods: [salency]\n")
    result, text = _invoke("explain", cases, "-c", bad, "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "unknown key 'clases'; did you mean 'classes'?" in text
    assert "methods[0].name: unknown method 'salency'; did you mean 'saliency'?" in text
    assert not (tmp_path / "o").exists()
    result, text = _invoke("validate", bad)
    assert result.exit_code == 2 and "model.torchscript" in text


def test_init_writes_a_template_that_validates(tmp_path):
    path = tmp_path / "x.yaml"
    result, text = _invoke("init", path)
    assert result.exit_code == 0, text
    result, text = _invoke("validate", path)
    assert result.exit_code == 0 and "valid" in text
    result, text = _invoke("init", path)
    assert result.exit_code == 2 and "--force" in text


def test_methods_table_and_version():
    result, text = _invoke("methods")
    assert result.exit_code == 0
    for name in ("saliency", "integrated_gradients", "gradient_shap", "deeplift"):
        assert name in text
    assert "50 fwd + 50 bwd" in text
    result, text = _invoke("--version")
    assert result.exit_code == 0 and __version__ in text


def test_target_all_writes_a_dominant_class_label_map(tmp_path, cases, make_config):
    out = tmp_path / "out"
    config = make_config(target={"class": "all"}, methods=["grad_cam"])
    result, text = _invoke("explain", cases / "lps.nii.gz", "-c", config, "-o", out, "-q")
    assert result.exit_code == 0, text
    rows = _manifest(out)
    assert [r["target"] for r in rows] == ["no", "yes", "dominant"]
    maps = [nib.load(r["nifti"]).get_fdata() for r in rows[:2]]
    label = nib.load(rows[2]["nifti"])
    assert label.get_data_dtype() == np.int16 and int(label.header["intent_code"]) == 1002
    np.testing.assert_array_equal(label.get_fdata(), np.argmax(np.stack(maps), axis=0))
    np.testing.assert_array_equal(label.affine, nib.load(rows[0]["source"]).affine)
    assert json.loads(Path(rows[2]["sidecar"]).read_text())["labels"] == {"0": "no", "1": "yes"}


def test_layers_lists_shapes_and_the_auto_layer(tmp_path, make_config):
    config = make_config()
    result, text = _invoke("layers", config, "--size", "8,8,6")
    assert result.exit_code == 0, text
    assert "conv" in text and "(1, 4, 8, 8, 6)" in text
    assert "relu" in text and "auto (features entering global pooling)" in text
    result, text = _invoke("layers", config)
    assert result.exit_code == 2 and "--size X,Y,Z" in text
    result, text = _invoke("layers", config, "--size", "8,x,6")
    assert result.exit_code == 2 and "--size 8,x,6 is not a size" in text, text


def test_layers_of_the_2d_sample_model_take_a_plane():
    result, text = _invoke("layers", ROOT / "configs" / "radiograph.yaml")
    assert result.exit_code == 0, text
    assert "Conv2d" in text and "(1, 1, 96, 96)" in text


def test_warnings_reach_the_manifest(tmp_path, cases, make_config):
    out = tmp_path / "out"
    config = make_config(methods=["guided_grad_cam", "saliency"])
    result, text = _invoke("explain", cases / "lps.nii.gz", "-c", config, "-o", out)
    assert result.exit_code == 0, text
    rows = {r["method"]: r for r in _manifest(out)}
    assert "sanity checks" in rows["guided_grad_cam"]["warning"]
    assert rows["saliency"]["warning"] == ""
    sidecar = json.loads(Path(rows["guided_grad_cam"]["sidecar"]).read_text())
    assert sidecar["method_details"]["layer"] == "relu"
    assert any("sanity checks" in w for w in sidecar["warnings"])
    assert "sanity checks" in text
