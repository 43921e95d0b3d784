"""Find the cases of an input: image files (NIfTI, NRRD, MetaImage), DICOM studies, or a folder
holding any mix of them."""

from __future__ import annotations

from pathlib import Path

from xaimed.errors import InputError
from xaimed.io.case import Case, safe_id
from xaimed.io.caselist import read_case_list
from xaimed.io.itk import detached_data_file, is_itk, itk_stem
from xaimed.io.nifti import is_nifti, nifti_stem
from xaimed.io.safety import regular_files, require_readable_kind, unique_case_ids


def discover_cases(input_path: Path, exclude: Path | None = None) -> list[Case]:
    """Cases in a deterministic order; ids are unique and file-name safe.

    Image files (NIfTI, NRRD, MetaImage; a detached ``.nhdr``/``.mhd`` header is the case, its
    data file is not) come first, sorted by path; then one case per DICOM study found in the
    other files (any layout, any file names), sorted by case id, a hash of the Study Instance UID.
    Only regular files are read (never FIFOs or devices); the folder ``exclude`` (the run's
    output folder) is left out, so a run never explains its own outputs.
    """
    if not input_path.exists():
        raise InputError(f"{input_path}: no such file or folder; check the INPUT argument.")
    require_readable_kind(input_path, "INPUT")
    if input_path.is_file():
        if is_case_list(input_path):
            return unique_case_ids(read_case_list(input_path), input_path.parent)
        if _is_image_file(input_path):
            return [_file_case(safe_id(_stem(input_path)), input_path)]
        dicom = _dicom_cases(input_path)
        if not dicom:
            raise InputError(
                f"{input_path}: neither an image file ({IMAGE_SUFFIXES}) nor a DICOM image; give "
                "an image file, a DICOM file or a folder."
            )
        return dicom
    found = regular_files(input_path, exclude)
    files = [p for p in found if _is_image_file(p)]
    # A NRRD/MetaImage header and the data file it names are not DICOM (nor are NIfTI files,
    # which candidate_files leaves out).
    headers = [p for p in found if is_itk(p)]
    itk_parts = set(headers) | {detached_data_file(p) for p in headers} - {None}
    others = [p for p in found if p not in itk_parts]
    dicom = _dicom_cases(input_path, others)
    if not files and not dicom:
        raise InputError(
            f"{input_path}: no image files ({IMAGE_SUFFIXES}) or DICOM images in this folder; "
            "check the INPUT argument."
        )
    stems = [safe_id(_stem(p)) for p in files]
    cases = []
    for path, stem in zip(files, stems, strict=True):
        if stems.count(stem) > 1:
            # Same file name in two subfolders: the relative path keeps the ids apart.
            rel = path.relative_to(input_path)
            stem = safe_id("__".join([*rel.parent.parts, _stem(path)]))
        cases.append(_file_case(stem, path))
    return unique_case_ids(cases + dicom, input_path)


IMAGE_SUFFIXES = ".nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd"


def _is_image_file(path: Path) -> bool:
    return is_nifti(path) or is_itk(path)


def _stem(path: Path) -> str:
    return nifti_stem(path) if is_nifti(path) else itk_stem(path)


def _file_case(case_id: str, path: Path) -> Case:
    return Case(case_id, path, format="nifti" if is_nifti(path) else "itk")


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
