"""Read a case into a Volume, whatever its format."""

from __future__ import annotations

from xaimed.config import Config
from xaimed.errors import InputError
from xaimed.io.cases import Case
from xaimed.io.nifti import is_nifti, read_nifti
from xaimed.io.safety import require_readable_kind
from xaimed.volume import Volume


def read_case(case: Case, config: Config) -> Volume:
    """The Volume of ``case``: its NIfTI file, or the chosen series of its DICOM study."""
    if case.format == "listed":
        case = resolve_listed(case)
    if case.format == "dicom":
        from xaimed.io.dicom.select import read_study

        return read_study(
            case.study, config.dicom, case_id=case.case_id,
            memory_budget=config.runtime.memory_budget_bytes,
        )  # fmt: skip
    return read_nifti(case.path, memory_budget=config.runtime.memory_budget_bytes)


def resolve_listed(case: Case) -> Case:
    """A case-list entry as a NIfTI case or a DICOM study, now that it is about to be read."""
    from dataclasses import replace

    path = case.path
    if not path.exists():
        raise InputError(
            f"case {case.case_id}: {path} does not exist; fix its path in the case list."
        )
    require_readable_kind(path, f"case {case.case_id}")
    if path.is_file() and is_nifti(path):
        return replace(case, format="nifti")
    from xaimed.io.dicom import scan_dicom

    studies = scan_dicom(path if path.is_dir() else [path])
    if len(studies) != 1:
        found = "no DICOM images" if not studies else f"{len(studies)} DICOM studies"
        raise InputError(
            f"case {case.case_id}: {path} holds {found}; a case-list path must be a NIfTI file "
            "or a folder with exactly one DICOM study."
        )
    return replace(case, path=studies[0].folder, format="dicom", study=studies[0])
