"""Find the cases of an input: one NIfTI file, or every NIfTI file below a folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from xaimed.errors import InputError
from xaimed.io.nifti import is_nifti, nifti_stem


@dataclass(frozen=True)
class Case:
    """One study to explain: an id safe for file names, and where its image is."""

    case_id: str
    path: Path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"


def discover_cases(input_path: Path) -> list[Case]:
    """Cases in a deterministic order (sorted by path); ids are unique and file-name safe."""
    if not input_path.exists():
        raise InputError(f"{input_path}: no such file or folder; check the INPUT argument.")
    if input_path.is_file():
        if not is_nifti(input_path):
            raise InputError(
                f"{input_path}: not a NIfTI file (.nii or .nii.gz); give a NIfTI file or a folder."
            )
        return [Case(_safe(nifti_stem(input_path)), input_path)]
    files = sorted(p for p in input_path.rglob("*") if p.is_file() and is_nifti(p))
    if not files:
        raise InputError(f"{input_path}: no NIfTI files (.nii, .nii.gz) in this folder or below.")
    stems = [_safe(nifti_stem(p)) for p in files]
    cases = []
    for path, stem in zip(files, stems, strict=True):
        if stems.count(stem) > 1:
            # Same file name in two subfolders: the relative path keeps the ids apart.
            rel = path.relative_to(input_path)
            stem = _safe("__".join([*rel.parent.parts, nifti_stem(path)]))
        cases.append(Case(stem, path))
    return cases
