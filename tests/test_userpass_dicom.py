"""Hostile single-frame DICOM: each damaged header is one sentence naming the file and the cause
(no pydicom internals), and a damaged study is a failed case, not a log line.

Radiographs are written with :func:`xaimed.sample.radiograph_dicom.write_radiograph`, then one
attribute is broken per test.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from xaimed.config.schema import DicomSection
from xaimed.errors import InputError
from xaimed.io.dicom import scan_dicom
from xaimed.io.dicom.select import read_study
from xaimed.sample.radiograph_dicom import write_radiograph
from xaimed.volume import Volume

SHAPE = (16, 12)  # (X, Y)


def _image() -> np.ndarray:
    x, y = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    return (x * 200 + y * 13).astype(np.float64)  # 0 .. 3143: fits 12 bits unscaled


def _cr(folder: Path, seed: str) -> Path:
    """A CR that reads back as its values (identity rescale, the LINEAR window of 0 .. 4095)."""
    return write_radiograph(
        _image(), folder / "IM1", kind="CR", uid_seed=seed, scale=False, window=(2048, 4096)
    )


def _read(folder: Path) -> Volume:
    (study,) = scan_dicom(folder)
    return read_study(study, DicomSection(), case_id="xr")


def test_multiframe_radiograph_is_named_as_such_and_the_other_study_reads(tmp_path):
    bad = _cr(tmp_path / "multi", "multi")
    ds = pydicom.dcmread(bad)
    frame = ds.pixel_array
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack([frame] * 3).tobytes()
    ds.save_as(bad)
    _cr(tmp_path / "good", "good")
    studies = scan_dicom(tmp_path)
    assert len(studies) == 2  # the multi-frame study is a case too, not dropped
    outcomes = {}
    for study in studies:
        try:
            outcomes[study.folder.name] = read_study(study, DicomSection(), case_id="xr")
        except InputError as exc:
            outcomes[study.folder.name] = str(exc)
    assert isinstance(outcomes["good"], Volume)
    message = outcomes["multi"]
    assert message.startswith("case xr: no image series of the study can be read: ")
    assert "a multi-frame CR image (3 frames); xaimed reads radiographs" in message
    assert "Image Position / Orientation (Patient), so its place" not in message  # not blamed


def test_multiframe_dx_with_a_plane_is_refused_not_read_as_its_first_frame(tmp_path):
    path = write_radiograph(
        _image(), tmp_path / "dx" / "IM1", kind="DX", uid_seed="dx", scale=False,
        window=(2048, 4096), affine=np.diag([0.5, 0.5, 1.0, 1.0]),
    )  # fmt: skip
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = [0.5, 0.5]  # with a plane and a spacing, frame 1 alone would be read
    frame = ds.pixel_array
    ds.NumberOfFrames = 2
    ds.PixelData = np.stack([frame, frame + 1]).tobytes()
    ds.save_as(path)
    with pytest.raises(InputError, match=r"IM1: a multi-frame DX image \(2 frames\); xaimed"):
        _read(tmp_path / "dx")


def test_study_with_no_readable_series_is_a_failing_case(tmp_path):
    path = _cr(tmp_path / "zero", "zero")
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = [0, 0]
    del ds.ImagerPixelSpacing
    ds.save_as(path)
    (study,) = scan_dicom(tmp_path)
    assert study.folder == tmp_path / "zero"
    with pytest.raises(InputError, match=r"^case xr: .*pixel spacing is not a finite, positive"):
        read_study(study, DicomSection(), case_id="xr")


def test_a_case_folder_with_an_unreadable_study_beside_a_readable_one_is_the_readable_one(
    tmp_path, caplog
):
    from xaimed.io.case import Case
    from xaimed.io.readers import DicomReader

    good = _cr(tmp_path / "case" / "good", "good")
    bad = _cr(tmp_path / "case" / "bad", "bad")
    ds = pydicom.dcmread(bad)
    ds.PixelSpacing = [0, 0]
    del ds.ImagerPixelSpacing
    ds.save_as(bad)
    with caplog.at_level("WARNING", logger="xaimed"):
        located = DicomReader().locate(Case("xr", tmp_path / "case", format=None))
    assert located.study is not None and located.path == good.parent
    assert [s.files for s in located.study.series] == [[good]]
    (warning,) = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert warning.startswith(
        f"case xr: reading the one readable DICOM study in {tmp_path / 'case'}"
    )
    assert f"left out: {bad}: " in warning and "pixel spacing is not a finite, positive" in warning
    # Two readable studies (beside the unreadable one) are not guessed between.
    _cr(tmp_path / "case" / "other", "other")
    with pytest.raises(InputError, match=r"holds 3 DICOM studies; a case-list path must be"):
        DicomReader().locate(Case("xr", tmp_path / "case", format=None))


def test_monochrome1_with_a_voi_lut_sequence_indexes_by_rounded_values(tmp_path):
    path = _cr(tmp_path / "lut", "lut")
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = "0.5", "0.25"  # non-integer Modality LUT output
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = (np.arange(4096, dtype="<u2") * 16).tobytes()
    ds.VOILUTSequence = Sequence([item])
    del ds.WindowCenter, ds.WindowWidth
    ds.save_as(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns when it truncates float indices
        volume = _read(tmp_path / "lut")
    stored = pydicom.dcmread(path).pixel_array.T.astype(np.float64)  # (X, Y)
    index = np.rint(0.5 * stored + 0.25)  # the LUT's input: the Modality LUT output, rounded
    expected = 65535 - 16 * index  # the LUT, then MONOCHROME1 inverted within 0 .. 2^16 - 1
    np.testing.assert_array_equal(volume.array[:, :, 0], expected)
    assert volume.meta["presentation"]["voi_lut"] == "applied: VOILUTSequence"


def test_short_voi_lut_data_is_one_sentence(tmp_path):
    path = _cr(tmp_path / "short", "short")
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = np.array([1, 2, 3], dtype="<u2").tobytes()
    ds.VOILUTSequence = Sequence([item])
    ds.save_as(path)
    with pytest.raises(InputError) as caught:
        _read(tmp_path / "short")
    assert str(caught.value).startswith("case xr, series ")
    assert (
        "IM1 has a VOI LUT whose LUT Descriptor declares 4096 entries but whose LUT Data holds 3; "
        "set dicom.voi_lut: display" in str(caught.value)
    )
    assert "unpack" not in str(caught.value)


def test_zero_window_width_is_one_sentence_without_library_text(tmp_path):
    path = _cr(tmp_path / "w0", "w0")
    ds = pydicom.dcmread(path)
    ds.WindowWidth = 0
    ds.save_as(path)
    with pytest.raises(InputError, match=r"IM1 has a VOI window of width 0 \(a LINEAR window"):
        _read(tmp_path / "w0")


def test_a_linear_exact_window_narrower_than_1_is_applied_and_a_linear_one_refused(tmp_path):
    # LINEAR_EXACT needs only a positive width (PS3.3 C.11.2.1.3.2); LINEAR needs 1 or more.
    path = _cr(tmp_path / "exact", "exact")
    ds = pydicom.dcmread(path)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 1000, 0.5, "LINEAR_EXACT"
    ds.save_as(path)
    volume = _read(tmp_path / "exact")
    assert volume.meta["presentation"]["voi_lut"].startswith("applied")
    values, stored = volume.array[:, :, 0], pydicom.dcmread(path).pixel_array.T
    # A step at 1000 (then MONOCHROME1 inverted): stored values below it the brightest, those
    # above it the darkest.
    assert set(np.unique(values[stored < 1000])) == {4095.0}
    assert set(np.unique(values[stored > 1000])) == {0.0}
    ds.VOILUTFunction = "LINEAR"
    ds.save_as(path)
    with pytest.raises(InputError, match=r"IM1 has a VOI window of width 0.5 \(a LINEAR window"):
        _read(tmp_path / "exact")


def test_bits_stored_beyond_bits_allocated_is_named(tmp_path):
    path = _cr(tmp_path / "bits", "bits")
    ds = pydicom.dcmread(path)
    ds.BitsStored, ds.HighBit = 20, 19
    ds.save_as(path)
    with pytest.raises(InputError) as caught:
        _read(tmp_path / "bits")
    message = str(caught.value)
    assert "IM1 declares Bits Stored 20 with Bits Allocated 16" in message
    assert "(0028,0101)" not in message and "compression" not in message


def test_truncated_pixel_data_is_named_with_its_sizes(tmp_path):
    path = _cr(tmp_path / "cut", "cut")
    data = path.read_bytes()
    path.write_bytes(data[:-100])  # the last 100 bytes of the pixel data are gone
    with pytest.raises(InputError) as caught:
        _read(tmp_path / "cut")
    expected = SHAPE[0] * SHAPE[1] * 2
    assert f"IM1 holds {expected - 100} bytes of pixel data where its header declares " in str(
        caught.value
    )
    assert "the file is truncated" in str(caught.value)


def test_native_ybr_full_422_is_not_taken_for_truncated(tmp_path):
    # Native YBR_FULL_422 holds two values a pixel (Y, Y, Cb, Cr for each pair): 2/3 of
    # rows x columns x 3 bytes, which a count of three samples a pixel called truncated.
    path = _cr(tmp_path / "ybr", "ybr")
    ds = pydicom.dcmread(path)
    for keyword in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
        delattr(ds, keyword)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    luma = (np.arange(SHAPE[1] * SHAPE[0]) % 200 + 20).astype(np.uint8).reshape(SHAPE[1], SHAPE[0])
    pairs = np.full((SHAPE[1], SHAPE[0] // 2, 4), 128, np.uint8)  # grey: Cb = Cr = 128
    pairs[..., 0], pairs[..., 1] = luma[:, 0::2], luma[:, 1::2]
    ds.PixelData = pairs.tobytes()
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    volume = _read(tmp_path / "ybr")
    assert volume.array.shape == (*SHAPE, 1, 3)
    for channel in range(3):  # grey in YBR is grey in RGB: each channel the luma
        np.testing.assert_allclose(volume.array[:, :, 0, channel], luma.T, atol=1)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda ds: delattr(ds, "Rows"), "IM1 has pixel data but no Rows in its header; "),
        (lambda ds: setattr(ds, "BitsStored", [12, 12]), "IM1 has Rows, Columns, Samples per "),
    ],
)
def test_an_image_pixel_header_that_cannot_size_the_data_is_one_sentence(tmp_path, edit, problem):
    path = _cr(tmp_path / "bad", "bad")
    (study,) = scan_dicom(tmp_path / "bad")  # the file changes after the scan (as on a share)
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path)
    with pytest.raises(InputError) as caught:
        read_study(study, DicomSection(), case_id="xr")
    message = str(caught.value)
    assert message.startswith("case xr, series ") and problem in message
    assert message.endswith("re-export the image.") and message.count(". ") == 0


def test_secondary_capture_of_a_radiograph_without_spacing_claims_none(tmp_path):
    from dicom_helpers import dciodvfy_errors

    from xaimed.writers.dicom_common import DerivedSeries
    from xaimed.writers.dicom_sc import write_secondary_captures
    from xaimed.writers.overlay import OverlayStyle
    from xaimed.writers.uids import DerivationKey

    path = _cr(tmp_path / "plain", "plain")
    ds = pydicom.dcmread(path)
    del ds.PixelSpacing, ds.ImagerPixelSpacing
    ds.save_as(path)
    source = _read(tmp_path / "plain")
    assert source.meta["pixel_spacing_source"] == "none (1 mm assumed)"
    key = DerivationKey(source.source.header.series.label, "saliency", {}, "finding", "ab" * 32)
    series = DerivedSeries(key, "saliency", "saliency map; research use, not for diagnosis")
    heatmap = source.with_array(source.array / source.array.max())
    folder = write_secondary_captures(source, heatmap, tmp_path / "sc", series, OverlayStyle())
    (sc_path,) = sorted(folder.iterdir())
    sc = pydicom.dcmread(sc_path)
    assert "PixelSpacing" not in sc  # 1 mm was assumed for reading, not measured
    assert dciodvfy_errors(sc_path) == []
