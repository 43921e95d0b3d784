"""Geometry: spacing and orientation from the affine, one grid check (shape and affine), and the
one RAS <-> LPS conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import oblique_affine, write_nifti

from xaimed.config import PreprocessingSection
from xaimed.errors import InputError
from xaimed.geometry import Geometry, lps_to_ras, ras_to_lps
from xaimed.io.nifti import read_nifti
from xaimed.methods.casefiles import CaseFiles
from xaimed.preprocess import prepare


def test_spacing_and_axcodes_come_from_the_affine():
    grid = Geometry.of((20, 18, 14, 2), oblique_affine((1.5, 2.0, 3.0), "LPS", angle=0.0))
    assert grid.shape == (20, 18, 14)
    assert grid.spacing == pytest.approx((1.5, 2.0, 3.0))
    assert grid.axcodes == "LPS"


def test_same_grid_needs_the_same_shape_and_affine_within_the_tolerance():
    affine = oblique_affine((1.5, 2.0, 3.0), "LPS")
    grid = Geometry.of((20, 18, 14), affine)
    nudged = affine.copy()
    nudged[0, 3] += 1e-4  # float32 storage rounds this much
    shifted = affine.copy()
    shifted[0, 3] += 0.5  # half a millimetre: another grid
    assert grid.same_grid(Geometry.of((20, 18, 14), nudged))
    assert not grid.same_grid(Geometry.of((20, 18, 14), shifted))
    assert not grid.same_grid(Geometry.of((20, 18, 15), affine))


def test_ras_and_lps_flip_x_and_y_and_undo_each_other():
    affine = oblique_affine((1.5, 2.0, 3.0), "RAS")
    lps = ras_to_lps(affine)
    np.testing.assert_array_equal(lps[:2], -affine[:2])
    np.testing.assert_array_equal(lps[2:], affine[2:])
    np.testing.assert_array_equal(lps_to_ras(lps), affine)


def test_a_per_case_file_with_the_images_shape_but_another_affine_is_refused(tmp_path: Path):
    affine = oblique_affine((2.0, 2.0, 2.0), "RAS", angle=0.0)
    write_nifti(tmp_path / "c1.nii.gz", np.ones((8, 8, 8)), affine)
    moved = affine.copy()
    moved[:3, 3] += 10.0
    write_nifti(tmp_path / "c1_labels.nii.gz", np.ones((8, 8, 8)), moved)
    section = PreprocessingSection()
    case = CaseFiles("c1", prepare(read_nifti(tmp_path / "c1.nii.gz"), section), section,
                    base_dir=tmp_path)  # fmt: skip
    with pytest.raises(InputError, match=r"^case c1: grouping\.path is on another grid .*"
                       r"resample it onto the image's grid\.$"):  # fmt: skip
        case.labels("{case_id}_labels.nii.gz", "grouping.path")
