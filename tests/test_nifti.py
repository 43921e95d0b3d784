"""NIfTI in and out: geometry, codes and display hints survive exactly; bad files are named."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import oblique_affine, write_nifti
from nibabel.testing import data_path

from xaimed.errors import InputError
from xaimed.io.nifti import read_nifti
from xaimed.writers.nifti import INTENT_ESTIMATE, write_nifti_map


def _assert_same_geometry(source: Path, written: Path) -> None:
    a, b = nib.load(str(source)), nib.load(str(written))
    assert a.shape[:3] == b.shape
    np.testing.assert_array_equal(a.affine, b.affine)
    qa, qca = a.header.get_qform(coded=True)
    qb, qcb = b.header.get_qform(coded=True)
    sa, sca = a.header.get_sform(coded=True)
    sb, scb = b.header.get_sform(coded=True)
    assert (int(qca), int(sca)) == (int(qcb), int(scb))
    if qa is not None:
        np.testing.assert_allclose(qa, qb, atol=1e-6)
    if sa is not None:
        np.testing.assert_array_equal(sa, sb)
    np.testing.assert_array_equal(a.header.get_zooms()[:3], b.header.get_zooms()[:3])


@pytest.mark.parametrize(
    ("axcodes", "spacing", "codes"),
    [
        ("LPS", (1.5, 2.0, 3.0), (1, 2)),
        ("LAS", (0.8, 0.8, 4.0), (2, 0)),
        ("RAS", (1, 1, 1), (1, 1)),
    ],
)
def test_map_keeps_source_geometry_and_codes(tmp_path, axcodes, spacing, codes):
    src = write_nifti(
        tmp_path / "src.nii.gz",
        np.arange(6 * 5 * 4).reshape(6, 5, 4),
        oblique_affine(spacing, axcodes),
        qform_code=codes[0],
        sform_code=codes[1],
    )
    volume = read_nifti(src)
    assert volume.axcodes == "".join(nib.aff2axcodes(nib.load(src).affine))
    values = np.linspace(-2, 3, volume.array.size, dtype=np.float32).reshape(volume.spatial_shape)
    out = write_nifti_map(volume.with_array(values), tmp_path / "map.nii.gz", method="saliency")
    _assert_same_geometry(src, out)
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), values)
    assert int(img.header["intent_code"]) == INTENT_ESTIMATE
    assert img.header["intent_name"].item() == b"saliency"
    # signed map: symmetric display range centred at zero
    assert float(img.header["cal_min"]) == -3.0 and float(img.header["cal_max"]) == 3.0


def test_big_endian_las_source_from_nibabel(tmp_path):
    src = Path(data_path) / "anatomical.nii"
    volume = read_nifti(src)
    assert volume.axcodes == "LAS"
    values = np.random.default_rng(0).random(volume.spatial_shape, dtype=np.float32)
    out = write_nifti_map(
        volume.with_array(values), tmp_path / "m.nii", method="integrated_gradients"
    )
    _assert_same_geometry(src, out)
    img = nib.load(str(out))
    assert img.header.endianness == "<"
    assert img.header["intent_name"].item() == b"integrated_grad"  # 15 bytes + NUL
    assert float(img.header["cal_min"]) == pytest.approx(float(values.min()))


def test_map_on_another_grid_is_refused(tmp_path):
    src = write_nifti(tmp_path / "s.nii.gz", np.zeros((4, 4, 4)), np.eye(4))
    with pytest.raises(ValueError, match="does not fit the grid"):
        read_nifti(src).with_array(np.zeros((4, 4, 5)))


def test_truncated_file_names_the_file(tmp_path):
    src = write_nifti(tmp_path / "whole.nii.gz", np.ones((16, 16, 16)), np.eye(4))
    blob = gzip.decompress(src.read_bytes())
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(blob[: len(blob) // 2]))
    with pytest.raises(InputError, match=r"cut\.nii\.gz: voxel data cannot be read.*truncated"):
        read_nifti(cut)


def test_not_a_nifti(tmp_path):
    bad = tmp_path / "junk.nii"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match=r"junk\.nii: not a readable NIfTI file"):
        read_nifti(bad)
