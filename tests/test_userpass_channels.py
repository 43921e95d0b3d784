"""Hostile multi-sequence cases: a 2D file among 3D channels (or the reverse) is refused in one
sentence, even with ``resample_to`` (which would otherwise put the plane into one slice)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import blob_volume, tiny_config, write_nifti

from xaimed.config import load_config
from xaimed.errors import InputError
from xaimed.io.case import Case, ChannelFile
from xaimed.io.read import read_case


@pytest.mark.parametrize("resample_to", [None, "a"])
def test_a_2d_channel_beside_a_3d_one_is_refused(tmp_path: Path, resample_to) -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    volume = write_nifti(tmp_path / "a.nii.gz", blob_volume((10, 10, 8)), affine)
    plane = write_nifti(tmp_path / "b.nii.gz", blob_volume((10, 10, 8))[:, :, 0], affine)
    channels = {"names": ["a", "b"]} | ({"resample_to": resample_to} if resample_to else {})
    data = tiny_config(tmp_path / "w.pt", preprocessing={"channels": channels},
                       model={"torchscript": str(tmp_path / "m.pt"), "in_channels": 2})  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path, check_files=False)
    case = Case("c1", volume, format=None,
                channels=(ChannelFile("a", volume), ChannelFile("b", plane)))  # fmt: skip
    with pytest.raises(InputError) as caught:
        read_case(case, config)
    assert str(caught.value) == (
        f"case c1: channel b ({plane}) is a 2D image (10, 10, 1) but a is a 3D volume "
        "(10, 10, 8); give every channel of a case as 2D images or every one as 3D volumes."
    )


def _two_channel_case(tmp_path: Path, shift_mm: float):
    ref_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    other_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    other_affine[0, 3] = shift_mm
    ref = write_nifti(tmp_path / "a.nii.gz", blob_volume((10, 10, 8)), ref_affine)
    other = write_nifti(tmp_path / "b.nii.gz", blob_volume((10, 10, 8)), other_affine)
    data = tiny_config(tmp_path / "w.pt",
                       preprocessing={"channels": {"names": ["a", "b"], "resample_to": "a"}},
                       model={"torchscript": str(tmp_path / "m.pt"), "in_channels": 2})  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path, check_files=False)
    case = Case("c1", ref, format=None, channels=(ChannelFile("a", ref), ChannelFile("b", other)))
    return case, config, other


def test_a_channel_outside_the_reference_field_of_view_is_refused(tmp_path: Path) -> None:
    case, config, other = _two_channel_case(tmp_path, shift_mm=500.0)
    with pytest.raises(InputError) as caught:
        read_case(case, config)
    assert str(caught.value).startswith(
        f"case c1: channel b ({other}) does not overlap a's field of view at all ("
    )


def test_partial_overlap_is_recorded_per_resampled_channel(tmp_path: Path) -> None:
    # b is shifted 8 mm (4 voxels) along x: its voxels start at x = 8 mm, so the reference
    # columns 4..9 (x = 8 .. 18 mm) lie inside it, 6 of 10.
    case, config, _ = _two_channel_case(tmp_path, shift_mm=8.0)
    volume = read_case(case, config)
    records = {r["name"]: r for r in volume.meta["channels"]}
    assert "inside_field_of_view" not in records["a"]
    assert records["b"]["inside_field_of_view"] == 0.6
