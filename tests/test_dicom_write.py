"""DICOM outputs: Parametric Map and Secondary Captures are valid, round-trip, and repeat."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_helpers import VENDOR, dciodvfy_errors, write_study

from xaimed.io.dicom import map_on_source_planes, read_dicom_series, scan_dicom
from xaimed.volume import Volume
from xaimed.writers.dicom_common import DerivedSeries
from xaimed.writers.dicom_pm import write_parametric_map
from xaimed.writers.dicom_sc import write_secondary_captures
from xaimed.writers.overlay import OverlayStyle
from xaimed.writers.uids import DerivationKey


def _source(folder: Path, **options) -> Volume:
    (study,) = scan_dicom(folder)
    return read_dicom_series(study.series[0], **options)


def _signed_map(volume: Volume) -> Volume:
    image = volume.array if volume.array.ndim == 3 else volume.array.mean(axis=3)
    data = (image - image.mean()) / (image.std() + 1e-6)
    return volume.with_array(data.astype(np.float32))


def _series(volume: Volume, method: str = "saliency", **params) -> DerivedSeries:
    key = DerivationKey(volume.source.header.series.label, method, params, "yes", "ab" * 32)
    return DerivedSeries(key, method, f"{method} map; research use, not for diagnosis")


def pm_values_in_source_order(path: Path, source: Volume) -> np.ndarray:
    """The Parametric Map's frames, read back with highdicom, in the source planes' order.

    highdicom may store the frames in another order (it sorts them along the normal); the
    per-frame positions say which source plane each frame describes.
    """
    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(path))
    values = pm.pixel_array.reshape(int(pm.NumberOfFrames), pm.Rows, pm.Columns)
    positions = np.array(
        [
            [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
            for item in pm.PerFrameFunctionalGroupsSequence
        ]
    )
    order = []
    for frame in source.source.header.stack.frames:
        distance = np.linalg.norm(positions - frame.position, axis=1)
        assert distance.min() < 1e-3, "a source plane has no frame in the Parametric Map"
        order.append(int(np.argmin(distance)))
    return values[order]


def _write_both(source: Volume, heatmap: Volume, out: Path, series: DerivedSeries):
    pm = write_parametric_map(heatmap, out / "map_pm.dcm", series)
    sc = write_secondary_captures(source, heatmap, out / "map_sc", series, OverlayStyle())
    return pm, sorted(sc.iterdir())


@pytest.fixture
def written(tmp_path):
    write_study(tmp_path / "src", rescale=(1.0, -1024.0))
    source = _source(tmp_path / "src")
    heatmap = _signed_map(source)
    pm, scs = _write_both(source, heatmap, tmp_path / "out", _series(source))
    return source, heatmap, pm, scs


def test_parametric_map_is_valid_and_round_trips(written):
    source, heatmap, pm_path, _ = written
    assert dciodvfy_errors(pm_path) == []
    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(pm_path))
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"
    assert pm.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert pm.pixel_array.dtype == np.float32
    values = pm_values_in_source_order(pm_path, source)
    np.testing.assert_allclose(values, map_on_source_planes(heatmap), atol=1e-6)
    # Per-frame geometry from the source planes, Frame Anatomy, references to every source.
    frames = source.source.header.stack.frames
    shared = pm.SharedFunctionalGroupsSequence[0]
    assert "FrameAnatomySequence" in shared
    mapping = shared.RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    referenced = {
        ref.ReferencedSOPInstanceUID
        for series in pm.ReferencedSeriesSequence
        for ref in series.ReferencedInstanceSequence
    }
    assert referenced == {f.sop_instance_uid for f in frames}
    first = pydicom.dcmread(frames[0].path, stop_before_pixels=True)
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate"):
        assert pm[keyword].value == first[keyword].value
    assert pm.SeriesInstanceUID != first.SeriesInstanceUID
    assert "NOT FOR DIAGNOSIS" in pm.SeriesDescription


def test_secondary_captures_are_valid_and_carry_the_source_geometry(written, tmp_path):
    source, _, _, sc_paths = written
    frames = source.source.header.stack.frames
    assert len(sc_paths) == len(frames)
    for path in sc_paths:
        assert dciodvfy_errors(path) == []
        # File names carry neither patient names nor ids.
        assert "Doe" not in str(path) and "PID" not in str(path)
    first_source = pydicom.dcmread(frames[0].path, stop_before_pixels=True)
    for path, frame in zip(sc_paths, frames, strict=True):
        sc = pydicom.dcmread(path)
        assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
        assert sc.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert list(sc.ImageType) == ["DERIVED", "SECONDARY"]
        assert sc.ConversionType == "WSD" and sc.BurnedInAnnotation == "NO"
        assert sc.PhotometricInterpretation == "RGB" and sc.pixel_array.shape[2] == 3
        assert "saliency" in sc.SeriesDescription and "NOT FOR DIAGNOSIS" in sc.SeriesDescription
        assert sc.DerivationDescription
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == frame.sop_instance_uid
        assert sc.FrameOfReferenceUID == first_source.FrameOfReferenceUID
        assert sc.PatientID == first_source.PatientID
        assert sc.StudyInstanceUID == first_source.StudyInstanceUID
        np.testing.assert_allclose(
            [float(v) for v in sc.ImagePositionPatient], frame.position, atol=1e-4
        )
    # SimpleITK reads the series back with the source's geometry.
    reader = sitk.ImageSeriesReader()
    back = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(sc_paths[0].parent)))
    src = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(frames[0].path.parent)))
    np.testing.assert_allclose(back.GetOrigin(), src.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetSpacing(), src.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), src.GetDirection(), atol=1e-5)


def test_rerun_writes_identical_uids_and_pixels_and_a_new_method_new_uids(written, tmp_path):
    source, heatmap, pm_path, sc_paths = written
    pm2, sc2 = _write_both(source, heatmap, tmp_path / "again", _series(source))
    a, b = pydicom.dcmread(pm_path), pydicom.dcmread(pm2)
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "SeriesNumber", "FloatPixelData"):
        assert a[keyword].value == b[keyword].value
    for one, two in zip(sc_paths, sc2, strict=True):
        x, y = pydicom.dcmread(one), pydicom.dcmread(two)
        assert (x.SOPInstanceUID, x.SeriesInstanceUID) == (y.SOPInstanceUID, y.SeriesInstanceUID)
        assert x.PixelData == y.PixelData
    other = _series(source, "integrated_gradients", steps=8)
    pm3, sc3 = _write_both(source, heatmap, tmp_path / "other", other)
    assert pydicom.dcmread(pm3).SeriesInstanceUID != a.SeriesInstanceUID
    assert (
        pydicom.dcmread(sc3[0]).SeriesInstanceUID != pydicom.dcmread(sc_paths[0]).SeriesInstanceUID
    )
    # PM and SC are separate series.
    assert pydicom.dcmread(sc_paths[0]).SeriesInstanceUID != a.SeriesInstanceUID


def test_overlay_blends_signed_maps_with_a_diverging_colour_map(written):
    _, heatmap, _, sc_paths = written
    from xaimed.writers.overlay import blend

    planes = map_on_source_planes(heatmap)
    k = int(np.argmax(np.abs(planes).reshape(len(planes), -1).max(axis=1)))
    rgb = pydicom.dcmread(sc_paths[k]).pixel_array.astype(int)
    r, c = np.unravel_index(int(np.argmax(planes[k])), planes[k].shape)
    assert rgb[r, c, 0] > rgb[r, c, 2]  # strongest positive: red side of RdBu_r
    r, c = np.unravel_index(int(np.argmin(planes[k])), planes[k].shape)
    assert rgb[r, c, 2] > rgb[r, c, 0]  # strongest negative: blue side
    grey = blend(
        np.ones((4, 4)), np.zeros((4, 4)), window=(0, 2), magnitude=0.0, signed=False,
        style=OverlayStyle(legend=False),
    )  # fmt: skip
    assert np.all(grey == 128)


def test_resampled_source_writes_outputs_on_the_source_planes(tmp_path):
    _, files = write_study(tmp_path / "src")
    files[5].unlink()
    source = _source(tmp_path / "src", resample_irregular=True)
    heatmap = _signed_map(source)
    pm, scs = _write_both(source, heatmap, tmp_path / "out", _series(source))
    assert len(scs) == 11 and pydicom.dcmread(pm).NumberOfFrames == 11
    assert dciodvfy_errors(pm) == [] and dciodvfy_errors(scs[0]) == []


@pytest.mark.parametrize(
    "name",
    ["philips_enhanced/anatomical/001", "siemens_multiframe/anatomical/001",
     "ge/anatomical/001_single_slice", "hitachi/anatomical/001"],
)  # fmt: skip
def test_vendor_sources_give_valid_outputs(tmp_path, name):
    source = _source(VENDOR / name)
    heatmap = _signed_map(source)
    pm, scs = _write_both(source, heatmap, tmp_path, _series(source))
    assert dciodvfy_errors(pm) == []
    assert dciodvfy_errors(scs[0]) == [] and dciodvfy_errors(scs[-1]) == []
    values = pm_values_in_source_order(pm, source)
    np.testing.assert_allclose(values, map_on_source_planes(heatmap), atol=1e-6)
    if "multiframe" in name or "enhanced" in name:
        ref = pydicom.dcmread(scs[2]).SourceImageSequence[0]
        assert int(ref.ReferencedFrameNumber) == source.source.header.stack.frames[2].frame_number


def test_lo_values_are_shortened_on_a_word_boundary():
    from xaimed.writers.dicom_common import LO_MAX, fit_lo

    text = (
        "integrated_gradients attribution map for output 'lesion' computed by xaimed 0.1.0 "
        "(model sha256 0123456789abcdef); research use, not for diagnosis"
    )
    short = fit_lo(text)
    assert len(short) <= LO_MAX and short.endswith("...")
    assert text.startswith(short[:-3]) and text[len(short) - 3] == " "  # cut before a space
    assert fit_lo("short enough") == "short enough"
    assert fit_lo("x" * 80) == "x" * 61 + "..."


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        ("saliency", "lesion", "saliency attribution map for output 'lesion'; research use only"),
        (
            "integrated_gradients",
            "lesion",
            "integrated_gradients attribution map for output 'lesion'",
        ),
        (
            "integrated_gradients_with_a_long_id",
            "left_hippocampus",
            "integrated_gradients_with_a_long_id attribution map for...",
        ),
    ],
)
def test_content_description_is_composed_to_fit(method, target, expected):
    key = DerivationKey("series", method, {}, target, "ab" * 32)
    series = DerivedSeries(key, method, "a long description", target=target)
    text = series.content_description()
    assert text == expected and len(text) <= 64
