"""Hostile 2D inputs for a 2D model, through the command line: a film too small for the
network fails alone, in a sentence giving the shape the 2D network was given."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_config
from tiny_models import TinyCNN2D
from typer.testing import CliRunner

from xaimed.cli import app
from xaimed.writers.manifest import read_manifest


def _film(path: Path, shape: tuple[int, int]) -> None:
    data = np.random.default_rng(0).normal(100, 10, shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.5, 1.0, 1.0])), path)


def test_a_film_too_small_for_the_network_names_the_2d_shape_and_the_rest_runs(tmp_path):
    folder = tmp_path / "films"
    folder.mkdir()
    _film(folder / "sliver.nii.gz", (1, 5))  # MaxPool2d(2) cannot pool one row
    _film(folder / "film.nii.gz", (12, 10))
    torch.manual_seed(0)
    torch.save(TinyCNN2D().state_dict(), tmp_path / "tiny2d.pt")
    sections = tiny_config(tmp_path / "tiny2d.pt")
    sections["model"] |= {"architecture": "tiny_models:TinyCNN2D", "spatial_dims": 2}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(sections))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["explain", str(folder), "--config", str(config), "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 1, result.output
    rows = {r["case_id"]: r for r in read_manifest(out / "manifest.csv")}
    assert rows["film"]["status"] == "ok"
    assert rows["sliver"]["status"] == "failed"
    assert rows["sliver"]["error"].startswith(
        "case sliver: the model fails on this input of shape (1, 1, 1, 5) ("
    )


def test_an_rgb_2d_image_is_described_as_one_not_as_a_4d_volume(tmp_path):
    from xaimed.config import PreprocessingSection
    from xaimed.errors import InputError
    from xaimed.preprocess import prepare
    from xaimed.volume import Source, Volume

    rgb = np.zeros((6, 4, 1, 3), np.float32)
    volume = Volume(rgb, np.eye(4), Source(Path("sc.dcm"), "dicom"), meta={"spatial_dims": 2})
    with pytest.raises(InputError) as caught:
        prepare(volume, PreprocessingSection())
    assert str(caught.value) == (
        "sc.dcm: the 2D image has 3 values per pixel (shape (6, 4) x 3, e.g. RGB), where one was "
        "expected; set preprocessing.channels.source: last_axis if the model takes them as "
        "channels."
    )
