"""Read a case into a Volume, whatever its format."""

from __future__ import annotations

from xaimed.config import Config
from xaimed.io.cases import Case
from xaimed.io.nifti import read_nifti
from xaimed.volume import Volume


def read_case(case: Case, config: Config) -> Volume:
    """The Volume of ``case``: its NIfTI file, or the chosen series of its DICOM study."""
    if case.format == "dicom":
        from xaimed.io.dicom.select import read_study

        return read_study(case.study, config.dicom, case_id=case.case_id)
    return read_nifti(case.path)
