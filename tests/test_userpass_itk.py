"""Hostile NRRD and MetaImage files: one sentence naming the case, the file and the cause, and
nothing printed by SimpleITK's C++ readers on the process's stderr."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from xaimed.errors import InputError
from xaimed.io.itk import read_itk


def _image() -> sitk.Image:
    image = sitk.GetImageFromArray(np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4))
    image.SetSpacing((1.5, 2.0, 2.5))
    return image


@pytest.mark.parametrize("suffix", [".mha", ".mhd"])
def test_truncated_metaimage_is_refused_before_metaio_prints(tmp_path, capfd, suffix):
    path = tmp_path / f"cut{suffix}"
    sitk.WriteImage(_image(), str(path), False)  # uncompressed
    holder = path if suffix == ".mha" else tmp_path / "cut.raw"
    data = holder.read_bytes()
    holder.write_bytes(data[: len(data) - 40])  # 10 float voxels short
    capfd.readouterr()
    with pytest.raises(InputError) as caught:
        read_itk(path, case_id="cut")
    assert str(caught.value) == (
        f"case cut: {path}: the voxel data in {holder} is truncated ({480 - 40} bytes where the "
        "header declares 480); re-export the image."
    )
    # MetaIO writes "M_ReadElementsData: data not read completely" straight to fd 2.
    assert capfd.readouterr().err == ""


def test_complete_metaimage_still_reads(tmp_path):
    path = tmp_path / "whole.mha"
    sitk.WriteImage(_image(), str(path), False)
    volume = read_itk(path, case_id="whole")
    assert volume.array.shape == (4, 5, 6)
    assert volume.array[3, 4, 5] == 6 * 5 * 4 - 1


def test_singular_directions_are_named_not_blamed_on_the_voxels(tmp_path):
    path = tmp_path / "flat.nrrd"
    path.write_bytes(
        b"NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: 4 4 4\n"
        b"space directions: (1,0,0) (1,0,0) (0,0,1)\nencoding: raw\nendian: little\n\n"
        + np.ones(64, np.float32).tobytes()
    )
    with pytest.raises(
        InputError, match=r"^case flat: .*flat\.nrrd: the header's space directions are singular"
    ):
        read_itk(path, case_id="flat")


def test_one_dimensional_image_and_empty_file(tmp_path):
    path = tmp_path / "line.nrrd"
    path.write_bytes(
        b"NRRD0004\ntype: float\ndimension: 1\nsizes: 50\nencoding: raw\nendian: little\n\n"
        + np.zeros(50, np.float32).tobytes()
    )
    with pytest.raises(InputError, match=r"the image has 1 dimension, xaimed reads 2D and 3D"):
        read_itk(path, case_id="line")
    empty = tmp_path / "empty.mha"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"^case empty: .*empty\.mha: the file is empty; "):
        read_itk(empty, case_id="empty")


def test_a_4d_nrrd_says_how_channels_are_read(tmp_path):
    path = tmp_path / "stack.nrrd"
    path.write_bytes(
        b"NRRD0004\ntype: float\ndimension: 4\nsizes: 4 3 2 2\nencoding: raw\nendian: little\n\n"
        + np.zeros(48, np.float32).tobytes()
    )
    with pytest.raises(InputError) as caught:
        read_itk(path, case_id="stack")
    assert str(caught.value).endswith(
        "the image has 4 dimensions, xaimed reads 2D and 3D NRRD and MetaImage images; export "
        "it as a 2D image or a 3D volume (channels as a vector image, or one file per channel "
        "with preprocessing.channels)."
    )


def test_ascii_metaimage_is_not_called_truncated(tmp_path):
    # BinaryData = False: voxels as text, fewer bytes than 8 per MET_DOUBLE here.
    path = tmp_path / "text.mha"
    path.write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = False\nDimSize = 2 2 2\n"
        "ElementSpacing = 1 1 1\nElementType = MET_DOUBLE\nElementDataFile = LOCAL\n"
        "1 2 3 4 5 6 7 8\n"
    )
    volume = read_itk(path, case_id="text")
    assert sorted(volume.array.ravel().tolist()) == [1, 2, 3, 4, 5, 6, 7, 8]
