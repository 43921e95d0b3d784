"""Find the cases of an input: a case list, a file, or a folder, through the format readers."""

from __future__ import annotations

from pathlib import Path

from xaimed.errors import InputError
from xaimed.io.case import Case
from xaimed.io.caselist import read_case_list
from xaimed.io.readers import READERS
from xaimed.io.safety import regular_files, require_readable_kind, unique_case_ids


def discover_cases(input_path: Path, exclude: Path | None = None) -> list[Case]:
    """Cases in a deterministic order; ids are unique and file-name safe.

    Each reader of :data:`xaimed.io.readers.READERS`, in order, finds the cases of its format
    among the files the readers before it left (NIfTI files first, sorted by path; then one case
    per DICOM study, sorted by case id). Only regular files are read (never FIFOs or devices);
    the folder ``exclude`` (the run's output folder) is left out, so a run never explains its
    own outputs.
    """
    if not input_path.exists():
        raise InputError(f"{input_path}: no such file or folder; check the INPUT argument.")
    require_readable_kind(input_path, "INPUT")
    if input_path.is_file() and is_case_list(input_path):
        return unique_case_ids(read_case_list(input_path), input_path.parent)
    if input_path.is_file():
        files, root = [input_path], input_path.parent
    else:
        files, root = regular_files(input_path, exclude), input_path
    cases: list[Case] = []
    for reader in READERS.values():
        found = reader.discover(files, root)
        claimed = {case.path for case in found}
        files = [p for p in files if p not in claimed]
        cases += found
    if not cases:
        kinds = " or ".join(reader.kind for reader in READERS.values())
        if input_path.is_file():
            raise InputError(
                f"{input_path}: not one of the formats xaimed reads ({kinds}); give such a "
                "file, a case list or a folder."
            )
        raise InputError(f"{input_path}: no {kinds} in this folder; check the INPUT argument.")
    return unique_case_ids(cases, input_path)


def is_case_list(path: Path) -> bool:
    """A CSV or TSV file naming the cases (see ``xaimed.io.caselist``)."""
    return path.suffix.lower() in {".csv", ".tsv"}
