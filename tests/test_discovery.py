"""Folder discovery asks every registered reader: a new format is found without touching it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import write_nifti
from dicom_helpers import write_study

from xaimed.config import Config
from xaimed.errors import InputError
from xaimed.io import readers
from xaimed.io.case import Case, safe_id
from xaimed.io.cases import discover_cases
from xaimed.volume import Source, Volume


class NpyReader:
    """A format the readers do not know: NumPy arrays on an identity grid (1 mm voxels)."""

    name = "npy"
    kind = "NumPy arrays (.npy)"

    def __init__(self) -> None:
        self.offered: list[Path] = []

    def discover(self, files: list[Path], root: Path) -> list[Case]:
        self.offered += files
        return [
            Case(safe_id(p.stem), p, format=self.name) for p in sorted(files) if p.suffix == ".npy"
        ]

    def locate(self, case: Case) -> Case | None:
        return replace(case, format=self.name) if case.path.suffix == ".npy" else None

    def read(self, case: Case, config: Config) -> Volume:
        return Volume(np.load(case.path), np.eye(4), Source(case.path, self.name))


@pytest.fixture
def npy_reader(monkeypatch):
    reader = NpyReader()
    # Registered after NIfTI and before DICOM, as CONTRIBUTING.md says a file format goes.
    order = [readers.READERS["nifti"], reader, readers.READERS["dicom"]]
    monkeypatch.setattr(readers, "READERS", {r.name: r for r in order})
    monkeypatch.setattr("xaimed.io.cases.READERS", readers.READERS)
    return reader


def test_a_registered_reader_finds_its_files_in_a_folder(tmp_path, npy_reader):
    folder = tmp_path / "in"
    write_nifti(folder / "a.nii.gz", np.zeros((4, 4, 4)), np.eye(4))
    (folder / "sub").mkdir()
    np.save(folder / "sub" / "b.npy", np.ones((3, 3, 3)))
    write_study(folder / "dicom", seed="one")
    cases = discover_cases(folder)
    assert [(c.case_id, c.format) for c in cases[:2]] == [("a", "nifti"), ("b", "npy")]
    assert [c.format for c in cases[2:]] == ["dicom"]
    # Files an earlier reader made cases of are not offered to later ones.
    assert folder / "a.nii.gz" not in npy_reader.offered
    assert folder / "sub" / "b.npy" in npy_reader.offered
    assert discover_cases(folder / "sub" / "b.npy")[0].format == "npy"


def test_a_folder_without_cases_names_every_registered_kind(tmp_path, npy_reader):
    (tmp_path / "notes.txt").write_text("nothing to explain")
    with pytest.raises(InputError) as err:
        discover_cases(tmp_path)
    message = str(err.value)
    assert message == (
        f"{tmp_path}: no NIfTI files (.nii, .nii.gz) or NumPy arrays (.npy) or DICOM images in "
        "this folder; check the INPUT argument."
    )
    with pytest.raises(InputError, match="not one of the formats xaimed reads"):
        discover_cases(tmp_path / "notes.txt")
