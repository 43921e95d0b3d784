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
