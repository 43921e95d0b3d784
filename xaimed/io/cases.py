"""Find the cases of an input: NIfTI files, DICOM studies, or a folder holding either or both."""

from __future__ import annotations

from pathlib import Path

from xaimed.errors import InputError
from xaimed.io.case import Case, safe_id
from xaimed.io.caselist import read_case_list
from xaimed.io.nifti import is_nifti, nifti_stem
from xaimed.io.safety import regular_files, require_readable_kind, unique_case_ids


def discover_cases(
    input_path: Path, exclude: Path | None = None, channels: tuple[str, ...] | None = None
) -> list[Case]:
    """Cases in a deterministic order; ids are unique and file-name safe.

    NIfTI files come first, sorted by path; then one case per DICOM study found in the other
    files (any layout, any file names), sorted by case id, a hash of the Study Instance UID.
    Only regular files are read (never FIFOs or devices); the folder ``exclude`` (the run's
    output folder) is left out, so a run never explains its own outputs.

    ``channels`` (config ``preprocessing.channels`` naming case-list columns) asks for
    multi-sequence cases, which only a case list can give: discovery finds one file per case.
    """
    if not input_path.exists():
        raise InputError(f"{input_path}: no such file or folder; check the INPUT argument.")
    require_readable_kind(input_path, "INPUT")
    if channels and not (input_path.is_file() and is_case_list(input_path)):
        raise InputError(
            f"{input_path}: preprocessing.channels names case-list columns "
            f"({', '.join(channels)}) but INPUT is not a case list; folder and file discovery "
            "find one image file per case, so give a CSV/TSV case list with those columns."
        )
    if input_path.is_file():
        if is_case_list(input_path):
            return unique_case_ids(read_case_list(input_path, channels), input_path.parent)
        if is_nifti(input_path):
            return [Case(safe_id(nifti_stem(input_path)), input_path)]
        dicom = _dicom_cases(input_path)
        if not dicom:
            raise InputError(
                f"{input_path}: neither a NIfTI file (.nii or .nii.gz) nor a DICOM image; give "
                "a NIfTI file, a DICOM file or a folder."
            )
        return dicom
    found = regular_files(input_path, exclude)
    files = [p for p in found if is_nifti(p)]
    dicom = _dicom_cases(input_path, found)
    if not files and not dicom:
        raise InputError(
            f"{input_path}: no NIfTI files (.nii, .nii.gz) or DICOM images in this folder; "
            "check the INPUT argument."
        )
    stems = [safe_id(nifti_stem(p)) for p in files]
    cases = []
    for path, stem in zip(files, stems, strict=True):
        if stems.count(stem) > 1:
            # Same file name in two subfolders: the relative path keeps the ids apart.
            rel = path.relative_to(input_path)
            stem = safe_id("__".join([*rel.parent.parts, nifti_stem(path)]))
        cases.append(Case(stem, path))
    return unique_case_ids(cases + dicom, input_path)


def is_case_list(path: Path) -> bool:
    """A CSV or TSV file naming the cases (see ``xaimed.io.caselist``)."""
    return path.suffix.lower() in {".csv", ".tsv"}


def _dicom_cases(path: Path, files: list[Path] | None = None) -> list[Case]:
    from xaimed.io.dicom import scan_dicom
    from xaimed.io.dicom.discovery import candidate_files

    if not path.is_dir():
        studies = scan_dicom([path])
    else:
        studies = scan_dicom(path if files is None else candidate_files(files))
    return [Case(s.case_id, s.folder, format="dicom", study=s) for s in studies]
