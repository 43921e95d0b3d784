"""Radiographs and single-frame DICOM: CR / DX read as 2D Volumes, their maps written as DICOM.

Values are checked against the grayscale pipeline computed by hand from the stored pixels and
the headers (PS3.3 C.11: Modality LUT, VOI LUT, MONOCHROME1), geometry against the headers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_helpers import dciodvfy_errors
from pydantic import ValidationError
from pydicom.data import get_testdata_file
from pydicom.sequence import Sequence

from xaimed.config.schema import DicomSection
from xaimed.errors import InputError
from xaimed.io.dicom import read_dicom_series, scan_dicom
from xaimed.io.dicom.select import read_study
from xaimed.sample.radiograph_dicom import STORED_MAX, write_radiograph
from xaimed.volume import Volume
from xaimed.writers.dicom_common import DerivedSeries
from xaimed.writers.dicom_outputs import dicom_source_record
from xaimed.writers.dicom_pm import write_parametric_map
from xaimed.writers.dicom_sc import write_secondary_captures
from xaimed.writers.overlay import OverlayStyle
from xaimed.writers.uids import DerivationKey

SHAPE = (72, 56)  # (X, Y): not square, so a transposed read shows


def _image() -> np.ndarray:
    """A ramp with a bright disc: every stored value differs along both axes."""
    x, y = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    disc = ((x - 40) ** 2 + (y - 20) ** 2 < 100).astype(float)
    return x + 0.5 * y + 60 * disc


def _read(path: Path, voi_lut: str = "apply") -> Volume:
    (study,) = scan_dicom([path])
    return read_study(study, DicomSection(voi_lut=voi_lut), case_id="xr")


def _stored(path: Path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array.astype(np.float64)


def _linear_window(m: np.ndarray, center: float, width: float, lo: float, hi: float):
    """PS3.3 C.11.2.1.2.1, the LINEAR window, written out."""
    out = ((m - (center - 0.5)) / (width - 1) + 0.5) * (hi - lo) + lo
    out[m <= center - 0.5 - (width - 1) / 2] = lo
    out[m > center - 0.5 + (width - 1) / 2] = hi
    return out


def _pixels(volume: Volume) -> np.ndarray:
    """The 2D Volume's values as (rows, columns), like a DICOM pixel array."""
    assert volume.array.shape == (*SHAPE, 1)
    return volume.array[:, :, 0].T.astype(np.float64)


@pytest.fixture
def cr(tmp_path) -> Path:
    return write_radiograph(
        _image(), tmp_path / "cr" / "IM1", kind="CR", uid_seed="cr", rescale=(0.5, -100.0),
        window=(700.0, 900.0), pixel_spacing=(0.2, 0.25),
    )  # fmt: skip


def test_cr_monochrome1_modality_and_voi_lut_applied_then_inverted(cr):
    volume = _read(cr)
    stored = _stored(cr)
    lo, hi = -100.0, STORED_MAX * 0.5 - 100.0  # the rescaled range of 12-bit stored values
    windowed = _linear_window(0.5 * stored - 100.0, 700.0, 900.0, lo, hi)
    np.testing.assert_allclose(_pixels(volume), lo + hi - windowed, atol=1e-3)
    # Higher is brighter: the disc, stored dark in MONOCHROME1, reads high.
    assert _pixels(volume)[20, 40] > _pixels(volume)[20, 5]
    record = volume.meta["presentation"]
    assert record["photometric_interpretation"] == "MONOCHROME1" and record["inverted"]
    assert record["voi_lut"] == "applied: window center 700, width 900 (LINEAR)"
    assert record["modality_lut"] == "rescale" and record["display_window"] is None


def test_cr_with_voi_lut_for_display_only(cr):
    volume = _read(cr, voi_lut="display")
    lo, hi = -100.0, STORED_MAX * 0.5 - 100.0
    np.testing.assert_allclose(_pixels(volume), lo + hi - (0.5 * _stored(cr) - 100.0), atol=1e-3)
    record = volume.meta["presentation"]
    assert record["voi_lut"] == "not applied (dicom.voi_lut: display)"
    # The window, in the inverted values: [700 - 450, 700 + 450] mirrored in the range.
    np.testing.assert_allclose(record["display_window"], [lo + hi - 1150, lo + hi - 250])


def test_dx_monochrome2_is_not_inverted(tmp_path):
    path = write_radiograph(
        _image(), tmp_path / "dx" / "IM1", kind="DX", uid_seed="dx", window=(2000.0, 3000.0)
    )
    stored = _stored(path)
    np.testing.assert_allclose(_pixels(_read(path, voi_lut="display")), stored)
    applied = _read(path)
    expected = _linear_window(stored, 2000.0, 3000.0, 0.0, STORED_MAX)
    np.testing.assert_allclose(_pixels(applied), expected, atol=1e-3)
    assert not applied.meta["presentation"]["inverted"]
    # The brightest input is the brightest pixel.
    assert np.unravel_index(np.argmax(stored), stored.shape) == np.unravel_index(
        np.argmax(_image().T), stored.shape
    )


def test_values_written_unscaled_read_back_unchanged(tmp_path):
    values = np.round(_image() * 20.0 + 100.0)  # 12-bit detector-like values
    assert values.max() <= STORED_MAX
    dx = write_radiograph(
        values, tmp_path / "dx" / "IM1", kind="DX", uid_seed="dx", scale=False,
        window=(2048.0, 4096.0),
    )  # fmt: skip
    np.testing.assert_allclose(_read(dx).array[:, :, 0], values, atol=1e-3)  # the window: identity
    cr = write_radiograph(values, tmp_path / "cr" / "IM1", kind="CR", uid_seed="cr", scale=False)
    np.testing.assert_allclose(_stored(cr), STORED_MAX - values.T)  # MONOCHROME1 stores 4095 - v
    np.testing.assert_allclose(_read(cr, voi_lut="display").array[:, :, 0], values)
    with pytest.raises(ValueError, match="do not fit 12 bits"):
        write_radiograph(values * 10, tmp_path / "x", kind="DX", uid_seed="x", scale=False)


def test_modality_lut_sequence_replaces_the_rescale(cr):
    ds = pydicom.dcmread(cr)
    del ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType
    item = pydicom.Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    table = (np.arange(4096) * 3 + 7).astype(np.uint16)
    item.LUTData = table.tolist()
    item["LUTData"].VR = "US"
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = Sequence([item])
    ds.save_as(cr)
    volume = _read(cr, voi_lut="display")
    expected = 65535.0 - table[_stored(cr).astype(int)]  # inverted within the LUT's 16 bits
    np.testing.assert_allclose(_pixels(volume), expected)
    assert volume.meta["presentation"]["modality_lut"] == "ModalityLUTSequence"


def test_pixel_spacing_wins_over_imager_pixel_spacing(cr):
    volume = _read(cr)
    assert volume.meta["pixel_spacing_source"] == "PixelSpacing"
    assert pydicom.dcmread(cr).ImagerPixelSpacing[0] != 0.2  # present, and different
    # Axis 0 runs along a row: the column spacing (0.25); axis 1 the row spacing (0.2).
    np.testing.assert_allclose(volume.spacing, (0.25, 0.2, 1.0))


@pytest.mark.parametrize(
    ("magnification", "spacing", "source"),
    [
        (1.25, (0.12, 0.16), "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"),
        (None, (0.15, 0.2), "ImagerPixelSpacing"),
    ],
)
def test_imager_pixel_spacing_when_pixel_spacing_is_absent(
    tmp_path, magnification, spacing, source
):
    path = write_radiograph(
        _image(), tmp_path / "dx" / "IM1", kind="DX", uid_seed="dx",
        pixel_spacing=(0.2, 0.15), magnification=magnification,
    )  # fmt: skip
    assert "PixelSpacing" not in pydicom.dcmread(path)
    volume = _read(path)
    np.testing.assert_allclose(volume.spacing[:2], spacing)
    assert volume.meta["pixel_spacing_source"] == source
    record = dicom_source_record(volume)
    assert record["pixel_spacing_source"] == source and record["spatial_dims"] == 2
    np.testing.assert_allclose(record["pixel_spacing"], spacing[::-1])


def test_plane_from_patient_orientation(cr):
    volume = _read(cr)
    assert volume.meta["spatial_dims"] == 2
    assert volume.meta["geometry_source"] == "PatientOrientation"
    # L\F (a PA view): rows towards the patient's left (RAS -x), columns towards the feet
    # (RAS -z), the unit normal towards posterior (RAS -y); the first pixel at the origin.
    expected = np.array(
        [[-0.25, 0, 0, 0], [0, 0, -1.0, 0], [0, -0.2, 0, 0], [0, 0, 0, 1]], dtype=float
    )
    np.testing.assert_allclose(volume.affine, expected, atol=1e-9)
    assert volume.axcodes == "LIP"


def test_identity_directions_without_patient_orientation(tmp_path):
    path = write_radiograph(
        _image(), tmp_path / "cr" / "IM1", kind="CR", uid_seed="cr", patient_orientation=None
    )
    volume = _read(path)
    assert volume.meta["geometry_source"] == "identity"
    # DICOM's identity directions (LPS +x, +y, normal +z) in RAS.
    np.testing.assert_allclose(volume.affine, np.diag([-0.2, -0.2, 1.0, 1.0]), atol=1e-9)


def test_single_frame_secondary_captures_without_a_plane_are_2d(tmp_path):
    # pydicom's test files: a grey NM secondary capture (JPEG 2000) and an RGB one (RLE), both
    # without Image Position / Orientation, Patient Orientation or a VOI window.
    for name in ("JPEG2000.dcm", "SC_rgb_rle.dcm"):
        (tmp_path / name).mkdir()
        shutil.copy(get_testdata_file(name), tmp_path / name / "image")
    grey = _read(tmp_path / "JPEG2000.dcm" / "image")
    ds = pydicom.dcmread(tmp_path / "JPEG2000.dcm" / "image")
    expected = ds.pixel_array.astype(np.float64)  # no rescale, MONOCHROME2
    np.testing.assert_allclose(grey.array[:, :, 0].T, expected)
    assert grey.meta["spatial_dims"] == 2 and grey.meta["geometry_source"] == "identity"
    assert grey.meta["pixel_spacing_source"] == "PixelSpacing"
    np.testing.assert_allclose(grey.spacing[:2], [float(v) for v in ds.PixelSpacing][::-1])
    assert grey.meta["presentation"]["voi_lut"] == "none in the header"
    assert "no Patient Orientation" in grey.meta["warnings"][0]
    rgb = _read(tmp_path / "SC_rgb_rle.dcm" / "image")
    ds = pydicom.dcmread(tmp_path / "SC_rgb_rle.dcm" / "image")
    assert rgb.array.shape == (ds.Columns, ds.Rows, 1, 3) and rgb.meta["spatial_dims"] == 2
    np.testing.assert_array_equal(rgb.array[:, :, 0].swapaxes(0, 1), ds.pixel_array)


def test_image_plane_attributes_are_used_when_present(tmp_path):
    affine = np.array(
        [[0, 0, 1.0, -20], [0.15, 0, 0, 30], [0, -0.15, 0, 40], [0, 0, 0, 1]], dtype=float
    )
    path = write_radiograph(
        _image(), tmp_path / "dx" / "IM1", kind="DX", uid_seed="dx", pixel_spacing=(0.15, 0.15),
        affine=affine,
    )  # fmt: skip
    volume = _read(path)
    assert volume.meta["geometry_source"] == "ImagePositionPatient/ImageOrientationPatient"
    assert volume.meta["pixel_spacing_source"] == "ImagerPixelSpacing"
    np.testing.assert_allclose(volume.affine[:, [0, 1, 3]], affine[:, [0, 1, 3]], atol=1e-6)
    # The third column is the unit normal of the plane.
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    np.testing.assert_allclose(volume.affine[:3, 2], normal / np.linalg.norm(normal), atol=1e-9)


def test_two_views_in_one_series_are_two_images_not_a_stack(tmp_path):
    first = write_radiograph(_image(), tmp_path / "s" / "IM1", kind="CR", uid_seed="two")
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID + ".2"
    ds.PatientOrientation, ds.InstanceNumber = ["P", "F"], 2  # a lateral view
    ds.save_as(tmp_path / "s" / "IM2")
    (study,) = scan_dicom(tmp_path / "s")
    assert [len(s.frames) for s in study.series] == [1, 1]
    for series in study.series:
        assert read_dicom_series(series).meta["spatial_dims"] == 2


def test_ct_slice_without_image_position_is_still_refused(tmp_path, cr):
    ds = pydicom.dcmread(cr)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.Modality = "CT"
    ds.save_as(cr)
    with pytest.raises(InputError, match=r"has no Image Position / Orientation \(Patient\)"):
        from xaimed.io.dicom.frames import frames_of

        frames_of(pydicom.dcmread(cr, stop_before_pixels=True), cr)
    # The study is still a case, which fails with that reason (a failed row in the manifest).
    (study,) = scan_dicom([cr])
    with pytest.raises(InputError, match=r"^case xr: no image series of the study can be read"):
        read_study(study, DicomSection(), case_id="xr")


def test_a_header_without_the_image_size_is_one_plain_sentence(cr):
    from xaimed.io.dicom.frames import frames_of

    ds = pydicom.dcmread(cr, stop_before_pixels=True)
    del ds.Rows
    with pytest.raises(InputError) as caught:
        frames_of(ds, cr)
    assert str(caught.value) == (
        f"{cr}: the header has no Rows (the image size); re-export the series with valid headers."
    )


def test_a_window_that_cannot_be_applied_is_named(cr):
    ds = pydicom.dcmread(cr)
    ds.WindowWidth = 0  # LINEAR needs a width of at least 1
    ds.save_as(cr)
    with pytest.raises(
        InputError,
        match=r"case xr, series .*: IM1 has a VOI window of width 0 \(a LINEAR window needs 1 "
        r"or more\); set dicom.voi_lut: display",
    ):
        _read(cr)
    assert _read(cr, voi_lut="display").meta["presentation"]["voi_lut"].startswith("not applied")


def test_voi_lut_option_is_validated():
    with pytest.raises(ValidationError, match="voi_lut"):
        DicomSection(voi_lut="window")


# --- writing --------------------------------------------------------------------------------


def _map(volume: Volume) -> Volume:
    image = volume.array.astype(np.float32)
    return volume.with_array(((image - image.mean()) / (image.std() + 1e-6)).astype(np.float32))


def _series(volume: Volume) -> DerivedSeries:
    key = DerivationKey(volume.source.header.series.label, "saliency", {}, "finding", "cd" * 32)
    return DerivedSeries(key, "saliency", "saliency map; research use, not for diagnosis")


@pytest.mark.parametrize("kind", ["CR", "DX"])
def test_parametric_map_and_secondary_capture_of_a_radiograph(tmp_path, kind):
    path = write_radiograph(_image(), tmp_path / "src" / "IM1", kind=kind, uid_seed=kind)
    source = _read(path)
    heatmap = _map(source)
    series = _series(source)
    pm_path = write_parametric_map(heatmap, tmp_path / "out" / "pm.dcm", series)
    sc_folder = write_secondary_captures(
        source, heatmap, tmp_path / "out" / "sc", series, OverlayStyle()
    )
    (sc_path,) = sorted(sc_folder.iterdir())
    assert dciodvfy_errors(pm_path) == []
    assert dciodvfy_errors(sc_path) == []
    original = pydicom.dcmread(path, stop_before_pixels=True)

    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(pm_path))
    assert int(pm.NumberOfFrames) == 1 and (pm.Rows, pm.Columns) == (SHAPE[1], SHAPE[0])
    np.testing.assert_allclose(pm.pixel_array.reshape(SHAPE[1], SHAPE[0]), _pixels(heatmap))
    assert pm.StudyInstanceUID == original.StudyInstanceUID
    assert pm.PatientID == original.PatientID
    (referenced,) = pm.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert referenced.ReferencedSOPInstanceUID == original.SOPInstanceUID
    # The map lies on the plane xaimed read the image on, in a frame of reference of its own.
    shared = pm.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(
        [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing],
        source.meta["pixel_spacing"],
    )
    position = pm.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    np.testing.assert_allclose([float(v) for v in position.ImagePositionPatient], [0, 0, 0])
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    np.testing.assert_allclose([float(v) for v in orientation], [1, 0, 0, 0, 0, -1])  # L\F
    assert "FrameOfReferenceUID" not in original and pm.FrameOfReferenceUID

    sc = pydicom.dcmread(sc_path)
    assert sc.pixel_array.shape == (SHAPE[1], SHAPE[0], 3)
    assert sc.StudyInstanceUID == original.StudyInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
    assert list(sc.PatientOrientation) == ["L", "F"]
    for keyword in ("FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient"):
        assert keyword not in sc
    np.testing.assert_allclose([float(v) for v in sc.PixelSpacing], source.meta["pixel_spacing"])


def test_secondary_capture_windows_with_the_voi_lut_when_it_was_for_display(cr, tmp_path):
    source = _read(cr, voi_lut="display")
    heatmap = source.with_array(np.zeros_like(source.array))  # nothing coloured: grey only
    folder = write_secondary_captures(
        source, heatmap, tmp_path / "sc", _series(source), OverlayStyle(legend=False)
    )
    grey = pydicom.dcmread(next(folder.iterdir())).pixel_array[..., 0].astype(float)
    low, high = source.meta["presentation"]["display_window"]
    expected = np.round(np.clip((_pixels(source) - low) / (high - low), 0, 1) * 255)
    np.testing.assert_array_equal(grey, expected)
    assert 0 < np.mean(grey == 0) < 1 and np.mean(grey == 255) < 1  # the window clips some


def test_secondary_capture_keeps_an_oblique_patient_orientation_letter_for_letter(tmp_path):
    path = write_radiograph(
        _image(), tmp_path / "src" / "IM1", kind="DX", uid_seed="oblique",
        patient_orientation=("L", "FP"),
    )  # fmt: skip
    source = _read(path)
    folder = write_secondary_captures(
        source, _map(source), tmp_path / "sc", _series(source), OverlayStyle()
    )
    (sc_path,) = sorted(folder.iterdir())
    assert list(pydicom.dcmread(sc_path).PatientOrientation) == ["L", "FP"]
    assert dciodvfy_errors(sc_path) == []
