"""Input formats: one :class:`Reader` per format, registered once in :data:`READERS`.

A reader turns a :class:`xaimed.io.case.Case` of its format into a :class:`xaimed.volume.Volume`
(array and RAS+ affine), recognises a case-list path of its format and finds the cases of its
format among an input folder's files (:func:`xaimed.io.cases.discover_cases` asks every reader).
Adding a format is one module with a reader class and one line in :data:`READERS` (see
CONTRIBUTING.md).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from xaimed.config import Config
from xaimed.errors import InputError
from xaimed.io.case import Case, cases_by_stem
from xaimed.io.itk import ItkReader
from xaimed.io.nifti import is_nifti, nifti_stem, read_nifti
from xaimed.volume import Volume

log = logging.getLogger("xaimed")


class Reader(Protocol):
    """What every input format provides."""

    name: str  # the Case.format of its cases
    kind: str  # what its files are, for messages: "NIfTI files (.nii, .nii.gz)"

    def discover(self, files: list[Path], root: Path) -> list[Case]:
        """The cases of this format among ``files`` (regular files under the INPUT folder
        ``root``, or the INPUT file alone), in a deterministic order; [] when none is. Files
        that earlier readers of :data:`READERS` made cases of are not passed on."""
        ...

    def locate(self, case: Case) -> Case | None:
        """``case`` (a case-list entry whose path exists) as a case of this format, or None
        when the path is not of this format. Raises InputError when it is of this format but
        unusable (e.g. a folder with several DICOM studies)."""
        ...

    def read(self, case: Case, config: Config) -> Volume:
        """The Volume of ``case``; raises InputError naming the case when it cannot be read."""
        ...


class NiftiReader:
    """A NIfTI file (``.nii``, ``.nii.gz``), read with nibabel."""

    name = "nifti"
    kind = "NIfTI files (.nii, .nii.gz)"

    def discover(self, files: list[Path], root: Path) -> list[Case]:
        """One case per NIfTI file, sorted by path, named by the file's stem (and, for one file
        name in several subfolders, by its path relative to ``root``)."""
        return cases_by_stem([p for p in files if is_nifti(p)], root, nifti_stem, self.name)

    def locate(self, case: Case) -> Case | None:
        """A NIfTI file is its own case."""
        return (
            replace(case, format=self.name) if case.path.is_file() and is_nifti(case.path) else None
        )

    def read(self, case: Case, config: Config) -> Volume:
        """The file's Volume."""
        return read_nifti(case.path, memory_budget=config.runtime.memory_budget_bytes)


class DicomReader:
    """A DICOM study: the series that ``dicom.select`` chooses, read with pydicom."""

    name = "dicom"
    kind = "DICOM images"

    def discover(self, files: list[Path], root: Path) -> list[Case]:
        """One case per DICOM study in ``files`` (any layout, any file names), sorted by case
        id, a hash of the Study Instance UID."""
        from xaimed.io.dicom import scan_dicom
        from xaimed.io.dicom.discovery import candidate_files

        studies = scan_dicom(candidate_files(files))
        return [Case(s.case_id, s.folder, format=self.name, study=s) for s in studies]

    def locate(self, case: Case) -> Case:
        """The one study under the path (or the one with this case's id; or the one with a
        readable series, the others left out with a warning)."""
        from xaimed.io.dicom import scan_dicom

        path = case.path
        studies = scan_dicom(path if path.is_dir() else [path])
        # A folder of a discovered run may hold several studies: the one with this id is the case.
        studies = [s for s in studies if s.case_id == case.case_id] or studies
        readable = [s for s in studies if s.series]
        if len(studies) > 1 and len(readable) == 1:
            # A study none of whose series can be read beside one that can (a stray report,
            # a broken export): the case is the readable one, the other only mentioned.
            for other in studies:
                if not other.series and other.unreadable:
                    log.warning(
                        "case %s: reading the one readable DICOM study in %s; a study beside it "
                        "has no readable series and is left out: %s",
                        case.case_id, path, other.unreadable[0][1],
                    )  # fmt: skip
            studies = readable
        if len(studies) != 1:
            found = "no DICOM images" if not studies else f"{len(studies)} DICOM studies"
            raise InputError(
                f"case {case.case_id}: {path} holds {found}; a case-list path must be a NIfTI, "
                "NRRD or MetaImage file or a folder with exactly one DICOM study."
            )
        return replace(case, path=studies[0].folder, format=self.name, study=studies[0])

    def read(self, case: Case, config: Config) -> Volume:
        """The chosen series of the study."""
        from xaimed.io.dicom.select import read_study

        study = case.study if case.study is not None else self.locate(case).study
        if study is None:  # locate() sets the study or raises; kept for the type checker
            raise InputError(f"case {case.case_id}: {case.path} holds no DICOM study.")
        return read_study(
            study, config.dicom, case_id=case.case_id,
            memory_budget=config.runtime.memory_budget_bytes,
        )  # fmt: skip


# Tried in this order for a case-list path (the last one may raise for what nobody claimed) and
# for the files of an input folder (each reader gets the files earlier ones left).
READERS: dict[str, Reader] = {
    reader.name: reader for reader in (NiftiReader(), ItkReader(), DicomReader())
}
