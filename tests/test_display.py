"""How maps are shown: grey window from the body, planes through the anatomy, source indices."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from xaimed.io.dicom import read_dicom_series, scan_dicom
from xaimed.io.nifti import read_nifti
from xaimed.volume import Volume
from xaimed.writers.dicom_common import DerivedSeries
from xaimed.writers.dicom_sc import write_secondary_captures
from xaimed.writers.display import display_window, focus_voxel, foreground_mask
from xaimed.writers.overlay import OverlayStyle
from xaimed.writers.png import source_plane, write_overlay_png
from xaimed.writers.uids import DerivationKey

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


def _grey(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    return np.clip((values - lo) / (hi - lo), 0, 1)


def test_window_from_the_body_keeps_a_lesion_brighter_than_the_brain():
    image = read_nifti(SAMPLE / "images" / "case01.nii.gz").array
    lesion = nib.load(SAMPLE / "masks" / "case01_lesion.nii.gz").get_fdata() > 0
    brain = foreground_mask(image) & ~lesion
    # The old whole-volume 1st-99th percentile window: brain and lesion both (nearly) white.
    old = tuple(np.percentile(image, [1, 99]))
    assert np.median(_grey(image[lesion], old)) == 1.0
    assert np.median(_grey(image[brain], old)) > 0.85
    window = display_window(image)
    lesion_grey = np.median(_grey(image[lesion], window))
    brain_grey = np.median(_grey(image[brain], window))
    assert brain_grey <= 0.62
    assert lesion_grey - brain_grey > 0.25
    # The background stays black.
    assert np.median(_grey(image[~foreground_mask(image)], window)) < 0.05


def test_focus_ignores_background_noise_and_picks_the_anatomy():
    rng = np.random.default_rng(0)
    image = np.zeros((32, 32, 32), np.float32)
    image[6:26, 6:26, 6:26] = 500
    values = np.zeros_like(image)
    outside = ~(image > 0)
    values[outside] = rng.normal(0, 1.0, int(outside.sum()))  # speckle up to |4|
    values[14:17, 10:13, 20:23] = 2.0  # a weaker but coherent spot inside the body
    assert np.unravel_index(np.argmax(np.abs(values)), values.shape) not in [
        (i, j, k) for i in range(14, 17) for j in range(10, 13) for k in range(20, 23)
    ]
    assert focus_voxel(values, foreground_mask(image)) == (15, 11, 21)


def test_source_plane_names_source_indices_of_a_reoriented_volume():
    # case03 is stored LPS: RAS x and y run against the file's i and j.
    volume = read_nifti(SAMPLE / "images" / "case03.nii.gz")
    shape = volume.spatial_shape
    assert volume.axcodes == "LPS"
    assert source_plane(volume.affine, shape, 1, 36) == "j=19"
    assert source_plane(volume.affine, shape, 0, 0) == f"i={shape[0] - 1}"
    assert source_plane(volume.affine, shape, 2, 7) == "k=7"


def test_png_is_written_for_a_reoriented_case(tmp_path):
    volume = read_nifti(SAMPLE / "images" / "case03.nii.gz")
    heatmap = volume.with_array((volume.array - volume.array.mean()).astype(np.float32))
    path = write_overlay_png(volume, heatmap, tmp_path / "map.png", title="case03")
    assert path.stat().st_size > 10_000


@pytest.fixture(scope="module")
def dicom_case03() -> Volume:
    (study,) = scan_dicom(SAMPLE / "dicom" / "PAT01")
    return read_dicom_series(study.series[0])


def test_secondary_capture_grey_shows_the_lesion(tmp_path, dicom_case03):
    source = dicom_case03
    heatmap = source.with_array(np.zeros(source.spatial_shape, np.float32))
    key = DerivationKey(source.source.header.series.label, "saliency", {}, "lesion", "ab" * 32)
    series = DerivedSeries(key, "saliency", "saliency map; research use, not for diagnosis")
    style = OverlayStyle(legend=False)
    folder = write_secondary_captures(source, heatmap, tmp_path / "sc", series, style)
    lesion = nib.load(SAMPLE / "masks" / "case03_lesion.nii.gz").get_fdata() > 0
    body = foreground_mask(source.array) & ~lesion
    # The SC pixels of each source plane, back on the volume's grid (planes run along k).
    frames = source.source.header.stack.frames
    planes = {}
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        position = np.array([float(v) for v in ds.ImagePositionPatient])
        (index,) = [i for i, f in enumerate(frames) if np.allclose(f.position, position)]
        planes[index] = ds.pixel_array[..., 0].T.astype(float) / 255  # rows are j, columns i
    grey = np.stack([planes[k] for k in range(len(frames))], axis=-1)
    assert grey.shape == source.spatial_shape
    assert np.median(grey[lesion]) - np.median(grey[body]) > 0.25
