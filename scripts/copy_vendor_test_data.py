"""Copy the vendor DICOM series the tests use into tests/data/dicom/vendor (maintainers only).

The series come from dicom2nifti's test data (MIT licence; LICENSE-dicom2nifti.txt is copied
beside them) by way of ``shared/data/dicom-vendor``, which a clone of this repository does not
have: with the copy, every test runs on a fresh clone. Series and reference conversions are
copied as they are, except the four 512 x 512 CT series of ``failing/`` (2 MB each), which the
tests only expect to be refused or resampled for their geometry: their pixels are subsampled
8 x 8 (64 x 64), with Pixel Spacing scaled and Image Position moved to the new first voxel's
centre, so every slice keeps its plane, orientation and position along the normal.

    .venv/bin/python scripts/copy_vendor_test_data.py [--source ../shared/data/dicom-vendor]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "tests" / "data" / "dicom" / "vendor"

# Read and compared with the converter's reference NIfTI.
READABLE = [
    "ge/anatomical/001", "ge/anatomical/001_single_slice", "generic/anatomical/001",
    "generic/anatomical/002_non_isotropic", "generic/compressed/001", "generic/compressed_j2k/001",
    "generic/compressed_jpeg/001", "generic/compressed_jpegls/001", "generic/compressed_rle/001",
    "generic/rgb/001", "hitachi/anatomical/001", "philips/anatomical/001",
    "philips_enhanced/anatomical/001", "siemens/anatomical/001",
    "siemens_multiframe/anatomical/001", "failing/slicecount/001",
]  # fmt: skip
# Refused (or split) for their geometry only; copied as they are.
AS_IS = ["failing/sliceorientation/001"]
# Refused or resampled for their geometry only; 512 x 512 CT, subsampled.
SUBSAMPLED = [
    "failing/gantrytilting/001", "failing/notavolume/001",
    "failing/sliceincrement/001", "failing/sliceincrement/002",
]  # fmt: skip
FACTOR = 8


def subsample(source: Path, dest: Path, factor: int = FACTOR) -> None:
    """Write ``source`` with every ``factor``-th row and column, its geometry kept consistent."""
    ds = pydicom.dcmread(source)
    pixels = ds.pixel_array[::factor, ::factor]
    row_step, col_step = (float(v) for v in ds.PixelSpacing)
    orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
    # The new first voxel covers the old block [0, factor) in both directions; its centre moves
    # by (factor - 1) / 2 old voxels along the row and the column directions.
    shift = (factor - 1) / 2 * (orientation[:3] * col_step + orientation[3:] * row_step)
    position = np.array([float(v) for v in ds.ImagePositionPatient]) + shift
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.PixelSpacing = [f"{row_step * factor:.6f}", f"{col_step * factor:.6f}"]
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, enforce_file_format=True)


def main(source: Path) -> None:
    """Copy (and subsample) the series from ``source`` into tests/data/dicom/vendor."""
    shutil.rmtree(DEST, ignore_errors=True)
    DEST.mkdir(parents=True)
    shutil.copy(source / "LICENSE-dicom2nifti.txt", DEST / "LICENSE-dicom2nifti.txt")
    for name in READABLE + AS_IS:
        shutil.copytree(source / name, DEST / name)
        reference = source / f"{name}_ground_truth.nii.gz"
        if name in READABLE:
            shutil.copy(reference, DEST / f"{name}_ground_truth.nii.gz")
    for name in SUBSAMPLED:
        for path in sorted((source / name).iterdir()):
            subsample(path, DEST / name / path.name)
    size = sum(p.stat().st_size for p in DEST.rglob("*") if p.is_file())
    print(f"wrote {size / 1e6:.1f} MB under {DEST}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared/data/dicom-vendor")
    main(parser.parse_args().source)
