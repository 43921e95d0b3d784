"""Reading DICOM: discovery in any layout, series selection, geometry, decoding, bad series."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import DATA, VENDOR, assert_same_in_world, write_study
from pydicom.data import get_testdata_file

from xaimed.config import DicomSection, DicomSelect
from xaimed.errors import InputError
from xaimed.io.cases import discover_cases
from xaimed.io.dicom import map_on_source_planes, read_dicom_series, scan_dicom
from xaimed.io.dicom.select import choose_series, read_study
from xaimed.io.nifti import read_nifti


def _only_series(folder: Path):
    studies = scan_dicom(folder)
    assert len(studies) == 1 and len(studies[0].series) == 1
    return studies[0].series[0]


def _read(folder: Path, **options):
    return read_dicom_series(_only_series(folder), **options)


# --- always-run: synthetic series and the small copies in tests/data/dicom ----------------------


def test_exported_oblique_series_reads_back_exactly(tmp_path):
    volume, files = write_study(tmp_path / "a" / "b", rescale=(0.5, -100.0))
    # Any layout: shuffled names without extension, nested folders.
    for i, path in enumerate(files):
        target = tmp_path / "export" / f"d{i % 3}" / f"x{(i * 7) % len(files):03d}"
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    read = _read(tmp_path / "export")
    assert read.source.format == "dicom" and read.meta["spatial_dims"] == 3
    assert read.spatial_shape == volume.spatial_shape
    np.testing.assert_allclose(read.affine, volume.affine, atol=1e-4)
    np.testing.assert_allclose(read.array, volume.array, atol=0.5 + 1e-4)  # slope 0.5 quantises


def test_rescale_is_applied_per_slice(tmp_path):
    _, files = write_study(tmp_path / "s")
    ds = pydicom.dcmread(files[3])
    stored = ds.pixel_array.astype(float)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -7
    ds.save_as(files[3])
    read = _read(tmp_path / "s")
    planes = [
        k
        for k in range(read.spatial_shape[2])
        if np.allclose(read.array[:, :, k].T, stored * 2 - 7)
    ]
    assert len(planes) == 1, "the slice with its own rescale was not found"


def test_sorting_ignores_instance_numbers_and_file_names(tmp_path):
    volume, files = write_study(tmp_path / "s")
    for path in files:  # reverse Instance Numbers
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = len(files) + 1 - int(ds.InstanceNumber)
        ds.save_as(path)
    read = _read(tmp_path / "s")
    np.testing.assert_allclose(read.affine, volume.affine, atol=1e-4)
    np.testing.assert_allclose(read.array, volume.array, atol=1e-4)


def test_single_slice_is_2d(tmp_path):
    _, files = write_study(tmp_path / "s")
    for path in files[1:]:
        path.unlink()
    read = _read(tmp_path / "s")
    assert read.meta["spatial_dims"] == 2 and read.spatial_shape[2] == 1


def test_hitachi_implicit_vr_equals_reference():
    assert_same_in_world(
        _read(DATA / "hitachi" / "001"), DATA / "hitachi" / "001_ground_truth.nii.gz"
    )


def test_rgb_jpeg2000_series_equals_reference():
    volume = _read(DATA / "rgb" / "001")
    assert volume.array.shape[3:] == (3,)
    assert_same_in_world(volume, DATA / "rgb" / "001_ground_truth.nii.gz")


def test_jpeg_lossless_equals_reference():
    volume = _read(DATA / "jpeg_lossless" / "001", min_slices=2)
    assert_same_in_world(volume, DATA / "jpeg_lossless" / "001_ground_truth_first2.nii.gz")


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
     "MR_small_implicit.dcm", "MR_small_bigendian.dcm"],
)  # fmt: skip
def test_compressed_encodings_decode_like_the_uncompressed_file(tmp_path, name):
    reference = _read_single(tmp_path / "ref", "MR_small.dcm")
    volume = _read_single(tmp_path / "enc", name)
    np.testing.assert_array_equal(volume.array, reference.array)
    np.testing.assert_allclose(volume.affine, reference.affine)


def _read_single(folder: Path, name: str):
    folder.mkdir()
    shutil.copy(get_testdata_file(name), folder / "image")
    return _read(folder)


def test_jpeg_baseline_decodes_without_gpl_plugins(tmp_path):
    import importlib.util

    assert importlib.util.find_spec("libjpeg") is None  # pylibjpeg-libjpeg is GPL: not installed
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    assert ds.pixel_array.shape == (100, 100, 3)


def test_missing_pixel_data_and_truncated_file_are_refused(tmp_path):
    _, files = write_study(tmp_path / "nopix")
    ds = pydicom.dcmread(files[2])
    del ds.PixelData
    ds.save_as(files[2])
    with pytest.raises(InputError, match=r"has no pixel data; re-export the series"):
        _read(tmp_path / "nopix")
    _, files = write_study(tmp_path / "trunc", seed="other")
    blob = files[4].read_bytes()
    files[4].write_bytes(blob[: len(blob) - 300])
    with pytest.raises(InputError, match=r"pixel data where its header declares .*truncated"):
        _read(tmp_path / "trunc")
    # Truncated inside the header: the file cannot be grouped, yet it is not silently left out.
    files[4].write_bytes(blob[:400])
    with pytest.raises(InputError, match=r"IM0005 beside its files is a truncated or corrupt"):
        _read(tmp_path / "trunc")


def test_gap_is_refused_unless_resampling_is_asked_for(tmp_path):
    volume, files = write_study(tmp_path / "s")
    files[5].unlink()
    with pytest.raises(
        InputError, match=r"slice spacing is inconsistent.*dicom.resample_irregular"
    ):
        _read(tmp_path / "s")
    read = _read(tmp_path / "s", resample_irregular=True)
    assert read.spatial_shape == volume.spatial_shape
    np.testing.assert_allclose(read.affine, volume.affine, atol=1e-4)
    assert "resampled onto 12 slices" in read.meta["warnings"][0]
    keep = [k for k in range(12) if k != 5]
    np.testing.assert_allclose(read.array[:, :, keep], volume.array[:, :, keep], atol=1e-3)
    interpolated = (volume.array[:, :, 4] + volume.array[:, :, 6]) / 2
    np.testing.assert_allclose(read.array[:, :, 5], interpolated, atol=1e-3)
    # Maps go back to the source planes exactly.
    planes = map_on_source_planes(read)
    assert planes.shape == (11, 18, 20)
    np.testing.assert_allclose(planes, np.moveaxis(volume.array[:, :, keep], 2, 0).swapaxes(1, 2))


def test_folder_mixing_nifti_dicom_and_non_images(tmp_path, caplog):
    from conftest import write_nifti

    _, files = write_study(tmp_path / "in" / "dicom" / "s1", seed="one")
    write_study(tmp_path / "in" / "dicom" / "s2", seed="two", axcodes="RAS")
    write_nifti(tmp_path / "in" / "plain.nii.gz", np.zeros((4, 4, 4)), np.eye(4))
    (tmp_path / "in" / "notes.txt").write_text("not dicom")
    (tmp_path / "in" / "junk").write_bytes(b"\x00" * 300)
    sr = pydicom.dcmread(files[0])
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR
    sr.SOPInstanceUID = "1.2.3.4"
    del sr.PixelData
    sr.save_as(tmp_path / "in" / "dicom" / "report", enforce_file_format=True)
    shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "in" / "DICOMDIR")
    with caplog.at_level(logging.INFO, logger="xaimed"):
        cases = discover_cases(tmp_path / "in")
    assert [c.format for c in cases] == ["nifti", "dicom", "dicom"]
    assert cases[0].case_id == "plain"
    assert all(c.case_id.startswith("study-") for c in cases[1:])
    assert "report: not an image series (Enhanced SR Storage)" in caplog.text
    assert "DICOMDIR: not an image series (Media Storage Directory Storage)" in caplog.text
    # No patient data in ids or log lines.
    for text in [caplog.text, *(c.case_id for c in cases)]:
        assert "PID-SECRET-42" not in text and "Doe" not in text
    assert len({c.case_id for c in cases}) == 3


def test_series_selection(tmp_path):
    write_study(tmp_path / "s", seed="same", series_description="T1 small", shape=(8, 8, 6))
    write_study(
        tmp_path / "s",
        seed="same",
        series_description="T2 big",
        series_number=2,
        modality="CT",
        file_names="CT{:04d}",
    )
    (study,) = scan_dicom(tmp_path / "s")
    assert len(study.series) == 2
    pick = choose_series(study, DicomSelect(), case_id="c")
    assert pick.description == "T2 big"  # the largest volume
    pick = choose_series(study, DicomSelect(description="^t1"), case_id="c")
    assert pick.description == "T1 small"
    assert choose_series(study, DicomSelect(modality="mr"), case_id="c").modality == "MR"
    # The study's series are listed by number, modality and size; descriptions may hold names
    # and stay out of messages (issue 19, item 11).
    with pytest.raises(
        InputError, match=r"no series matches dicom.select .*#1 MR \(6 planes\)"
    ) as err:
        choose_series(study, DicomSelect(modality="PT"), case_id="c")
    assert "T1 small" not in str(err.value)
    volume = read_study(study, DicomSection(select=DicomSelect(modality="CT")), case_id="c")
    assert volume.source.header.series.description == "T2 big"


# --- pydicom's bundled test series ------------------------------------------------------------


def _pydicom_series(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "series"
    folder.mkdir(exist_ok=True)
    for name in names:
        shutil.copytree(get_testdata_file(f"dicomdirtests/{name}"), folder / name.replace("/", "_"))
    return folder


def test_pydicom_ct5n_reversed_instance_numbers_sorted_by_position(tmp_path):
    (series,) = [
        s for st in scan_dicom(_pydicom_series(tmp_path, "98892001/CT5N")) for s in st.series
    ]
    volume = read_dicom_series(series)
    datasets = [pydicom.dcmread(f.path) for f in series.frames]
    by_position = sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))
    numbers = [int(d.InstanceNumber) for d in by_position]
    assert numbers == sorted(numbers, reverse=True)  # Instance Numbers run opposite to z
    for k, ds in enumerate(by_position):
        expected = ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_allclose(volume.array[:, :, k], expected)
        world = volume.affine @ [0, 0, k, 1]
        lps = [float(v) for v in ds.ImagePositionPatient]
        np.testing.assert_allclose(world[:3], [-lps[0], -lps[1], lps[2]], atol=1e-4)


def test_pydicom_ct2_z_gap_is_refused(tmp_path):
    folder = _pydicom_series(tmp_path, "77654033/CT2")
    with pytest.raises(InputError, match=r"slice spacing is inconsistent \(1.25 to 202 mm"):
        _read(folder)


def test_pydicom_mixed_mr_series_are_split(tmp_path):
    folder = _pydicom_series(tmp_path, "98892003/MR1", "98892003/MR2", "98892003/MR700")
    studies = scan_dicom(folder)
    parts = [s for st in studies for s in st.series]
    for part in parts:
        orientations = {tuple(np.round(f.orientation, 3)) for f in part.frames}
        assert len(orientations) == 1
        assert read_dicom_series(part).meta["spatial_dims"] == 2
    assert any(p.parts > 1 for p in parts)


# --- the vendor matrix (tests/data/dicom/vendor) ---------------------------------------------

READABLE = [
    "ge/anatomical/001", "ge/anatomical/001_single_slice", "generic/anatomical/001",
    "generic/anatomical/002_non_isotropic", "generic/compressed/001", "generic/compressed_j2k/001",
    "generic/compressed_jpeg/001", "generic/compressed_jpegls/001", "generic/compressed_rle/001",
    "generic/rgb/001", "hitachi/anatomical/001", "philips/anatomical/001",
    "philips_enhanced/anatomical/001", "siemens/anatomical/001",
    "siemens_multiframe/anatomical/001",
]  # fmt: skip


@pytest.mark.parametrize("name", READABLE)
def test_vendor_series_equals_reference_conversion(name):
    volume = _read(VENDOR / name)
    assert_same_in_world(volume, VENDOR / f"{name}_ground_truth.nii.gz")
    if name.endswith("single_slice"):
        assert volume.meta["spatial_dims"] == 2


REFUSED = {
    "failing/gantrytilting/001": r"tilted by 14.00 degrees .*\(gantry tilt\)",
    "failing/notavolume/001": r"4 slices share one position",
    "failing/slicecount/001": r"only 2 slices, fewer than dicom.min_slices \(3\)",
    "failing/sliceincrement/001": r"slice spacing is inconsistent \(5 to 10 mm",
    "failing/sliceincrement/002": r"tilted by 15.50 degrees",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_vendor_failing_series_are_refused_with_the_reason(name):
    with pytest.raises(InputError, match=REFUSED[name]):
        _read(VENDOR / name)


def test_vendor_failing_series_that_can_be_handled_are_read_correctly():
    two = _read(VENDOR / "failing/slicecount/001", min_slices=2)
    assert_same_in_world(two, VENDOR / "failing/slicecount/001_ground_truth.nii.gz")
    gap = _read(VENDOR / "failing/sliceincrement/001", resample_irregular=True)
    assert gap.spatial_shape[2] == 5 and np.allclose(gap.spacing[2], 5.0, atol=1e-3)
    assert "resampled onto 5 slices" in gap.meta["warnings"][0]
    parts = [s for st in scan_dicom(VENDOR / "failing/sliceorientation/001") for s in st.series]
    assert [p.parts for p in parts] == [2, 2]  # split by orientation, then each read alone
    for part in parts:
        with pytest.raises(InputError, match=r"only 2 slices"):
            read_dicom_series(part)
        assert read_dicom_series(part, min_slices=2).spatial_shape == (288, 288, 2)


def test_vendor_nifti_reference_and_dicom_agree_through_read_nifti():
    # The reference NIfTI through xaimed's NIfTI reader and the DICOM through the DICOM reader
    # give the same world-space volume: one RAS convention for both.
    dicom = _read(VENDOR / "philips/anatomical/001")
    nifti = read_nifti(VENDOR / "philips/anatomical/001_ground_truth.nii.gz")
    assert dicom.axcodes == nifti.axcodes
    np.testing.assert_allclose(dicom.affine, nifti.affine, atol=1e-3)
