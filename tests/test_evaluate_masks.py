"""Ground-truth masks: NIfTI on the image grid, and DICOM SEG sampled onto it by position."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from conftest import write_nifti
from dicom_helpers import write_study

from xaimed.config import DicomSection
from xaimed.errors import InputError
from xaimed.evaluate.masks import read_mask
from xaimed.io.cases import discover_cases
from xaimed.io.dicom.select import read_study
from xaimed.io.nifti import read_nifti

RADIUS_MM = 9.0


def _sphere_lps(points_lps: np.ndarray, centre: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points_lps - centre, axis=-1) < RADIUS_MM


def _write_seg(files, path, centre):
    """A binary DICOM SEG of a world-space sphere, drawn frame by frame from DICOM geometry."""
    import highdicom as hd

    datasets = [pydicom.dcmread(f) for f in files]
    frames = []
    for ds in datasets:
        ipp = np.asarray(ds.ImagePositionPatient, float)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        r, c = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
        points = ipp + c[..., None] * col_mm * iop[:3] + r[..., None] * row_mm * iop[3:]
        frames.append(_sphere_lps(points, centre))
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=hd.sr.CodedConcept(
            "49755003", "SCT", "Morphologic abnormality"
        ),
        segmented_property_type=hd.sr.CodedConcept("4147007", "SCT", "Mass"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=np.stack(frames).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description], series_instance_uid=hd.UID(), series_number=99,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test",
        manufacturer_model_name="test", software_versions="0", device_serial_number="0",
    )  # fmt: skip
    seg.save_as(str(path))
    return path


def test_dicom_seg_is_sampled_onto_the_image_grid(tmp_path):
    _, files = write_study(tmp_path / "study")
    (case,) = discover_cases(tmp_path / "study")
    source = read_study(case.study, DicomSection(), case_id=case.case_id)
    centre_ras = source.affine @ np.r_[(np.asarray(source.spatial_shape) - 1) / 2, 1.0]
    centre_lps = centre_ras[:3] * [-1, -1, 1]
    seg = _write_seg(files, tmp_path / "seg.dcm", centre_lps)
    mask = read_mask(seg, source, case.case_id)
    idx = np.indices(source.spatial_shape).reshape(3, -1)
    ras = (source.affine[:3, :3] @ idx + source.affine[:3, 3:]).T
    expected = _sphere_lps(ras * [-1, -1, 1], centre_lps).reshape(source.spatial_shape)
    assert expected.sum() > 10
    np.testing.assert_array_equal(mask, expected)


def test_a_nifti_mask_on_another_grid_is_refused(tmp_path):
    image = write_nifti(tmp_path / "image.nii.gz", np.zeros((4, 4, 4)), np.diag([2, 2, 2, 1]))
    source = read_nifti(image)
    path = write_nifti(tmp_path / "m.nii.gz", np.ones((3, 3, 3)), np.eye(4))
    with pytest.raises(InputError, match=r"case x: mask .*m.nii.gz is not on the image's grid"):
        read_mask(path, source, "x")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    with pytest.raises(InputError, match="neither NIfTI nor a readable DICOM SEG"):
        read_mask(junk, source, "x")


def test_an_nrrd_mask_on_the_image_grid_is_read_like_a_nifti_one(tmp_path):
    """A 3D Slicer user's label map (.nrrd) on the image's grid evaluates like a NIfTI mask."""
    from xaimed.writers.itk import write_itk

    affine = np.array([[-2.0, 0, 0, 10], [0, -2.0, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]])
    source = read_nifti(write_nifti(tmp_path / "image.nii.gz", np.zeros((6, 5, 4)), affine))
    labels = np.zeros((6, 5, 4), dtype=np.uint8)
    labels[1:3, 2:4, 1] = 1
    path = write_itk(
        source.with_array(labels), tmp_path / "mask.nrrd", dtype=np.uint8, compress=True, meta={}
    )
    np.testing.assert_array_equal(read_mask(path, source, "x"), labels > 0)
    other = read_nifti(write_nifti(tmp_path / "o.nii.gz", np.zeros((6, 5, 4)), np.eye(4)))
    with pytest.raises(InputError, match=r"case x: mask .*mask.nrrd is not on the image's grid"):
        read_mask(path, other, "x")
