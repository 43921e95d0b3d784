"""Export two sample cases as DICOM studies: sample_data/dicom/ (deterministic, small).

case03 (lesion; LPS, 3.5 x 3.5 x 5 mm) as an MR series with extension-less files in nested
folders, RLE-compressed; case04 (healthy; LAS) as an uncompressed CT series with a rescale
intercept. Running it twice writes identical files.

    .venv/bin/python scripts/make_sample_dicom.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

from xaimed.io.dicom.export import export_series
from xaimed.io.nifti import read_nifti

ROOT = Path(__file__).resolve().parent.parent


def main(out: Path = ROOT / "sample_data" / "dicom") -> None:
    """Write ``out`` (default sample_data/dicom/) from sample_data/images/case03 and case04."""
    shutil.rmtree(out, ignore_errors=True)
    images = ROOT / "sample_data" / "images"
    export_series(
        read_nifti(images / "case03.nii.gz"),
        out / "PAT01" / "STUDY01" / "SER01",
        uid_seed="xaimed-sample-case03",
        patient_id="SAMPLE03",
        patient_name="Sample^Three",
        modality="MR",
        series_description="T1 phantom (sample case03)",
        compress_rle=True,
    )
    export_series(
        read_nifti(images / "case04.nii.gz"),
        out / "PAT02",
        uid_seed="xaimed-sample-case04",
        patient_id="SAMPLE04",
        patient_name="Sample^Four",
        modality="CT",
        series_description="CT phantom (sample case04)",
        rescale=(1.0, -1024.0),
        file_names="{:03d}.dcm",
    )
    print(f"wrote {sum(1 for _ in out.rglob('*') if _.is_file())} files under {out}")


if __name__ == "__main__":
    main()
