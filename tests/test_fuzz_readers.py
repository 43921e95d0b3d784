"""Fuzz the NIfTI, NRRD, MetaImage and DICOM readers: mutated headers, truncated files.

Every outcome must be a Volume or an InputError (one sentence for the user), never another
exception and never a hang: a SIGALRM turns an example that runs too long into a failure. The
examples are derandomised so CI runs the same few hundred every time, within a minute.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import TESTS, oblique_affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xaimed.config import DicomSection
from xaimed.errors import InputError
from xaimed.io.dicom import scan_dicom
from xaimed.io.dicom.select import read_study
from xaimed.io.itk import read_itk
from xaimed.io.nifti import read_nifti
from xaimed.volume import Volume

SERIES = TESTS / "data" / "dicom" / "hitachi" / "001"  # 4 slices, implicit VR, 1272-byte header
DICOM_HEADER = 1272
NIFTI_HEADER = 352  # 348-byte NIfTI-1 header and the 4-byte extension flag
BUDGET = 64 * 2**20  # a sane limit for these tiny images: huge declared sizes are refused
SECONDS = 10  # per example; the readers take milliseconds on these files

# XAIMED_FUZZ_EXAMPLES=5000 runs a longer, random search locally; CI runs the fixed set.
EXAMPLES = int(os.environ.get("XAIMED_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 120,
    deadline=None,  # shared CI machines: time is bounded by SECONDS instead
    derandomize=not EXAMPLES,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def hang(signum: int, frame: object) -> None:
        raise TimeoutError(f"reader still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def nifti_bytes() -> bytes:
    """A small int16 NIfTI-1 with scaling and an oblique affine, as one file's bytes."""
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    img = nib.Nifti1Image(data, oblique_affine())
    img.header.set_slope_inter(0.5, 10.0)
    return img.to_bytes()


NIFTI = nifti_bytes()

mutations = st.lists(
    st.tuples(st.integers(0, NIFTI_HEADER - 1), st.integers(0, 255)), min_size=1, max_size=8
)


def mutate(data: bytes, changes: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for offset, value in changes:
        if offset < len(out):
            out[offset] = value
    return bytes(out)


def read_or_refuse(read: Callable[[], Volume]) -> Volume | None:
    """Run a reader; a Volume or an InputError are the only acceptable outcomes."""
    with time_limit(SECONDS):
        try:
            volume = read()
        except InputError as exc:
            message = str(exc)
            assert message and "\n" not in message.strip()
            return None
    assert isinstance(volume, Volume)
    assert volume.array.dtype == np.float32
    return volume


@FUZZ
@given(changes=mutations, cut=st.none() | st.integers(0, len(NIFTI)), compress=st.booleans())
def test_nifti_reader_survives_mutated_headers_and_truncation(
    changes: list[tuple[int, int]], cut: int | None, compress: bool
) -> None:
    data = mutate(NIFTI, changes)[:cut]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("x.nii.gz" if compress else "x.nii")
        path.write_bytes(gzip.compress(data) if compress else data)
        read_or_refuse(lambda: read_nifti(path, memory_budget=BUDGET))


@FUZZ
@given(cut=st.integers(0, len(NIFTI) - 1))
def test_nifti_reader_refuses_every_truncation(cut: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.nii"
        path.write_bytes(NIFTI[:cut])
        assert read_or_refuse(lambda: read_nifti(path, memory_budget=BUDGET)) is None


dicom_changes = st.lists(
    st.tuples(st.integers(0, DICOM_HEADER - 1), st.integers(0, 255)), min_size=1, max_size=6
)


@FUZZ
@given(
    slice_index=st.integers(0, 3),
    changes=dicom_changes,
    cut=st.none() | st.integers(0, 9464),
)
def test_dicom_reader_survives_mutated_headers_and_truncation(
    slice_index: int, changes: list[tuple[int, int]], cut: int | None
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        study = Path(folder) / "s"
        shutil.copytree(SERIES, study)
        victim = sorted(study.iterdir())[slice_index]
        victim.write_bytes(mutate(victim.read_bytes(), changes)[:cut])
        with time_limit(SECONDS):
            try:
                studies = scan_dicom(study)
            except InputError:
                return
        for found in studies:
            read_or_refuse(
                lambda found=found: read_study(
                    found, DicomSection(), case_id="fuzz", memory_budget=BUDGET
                )
            )


def itk_bytes(suffix: str) -> bytes:
    """A small int16 NRRD or MetaImage with a flipped, anisotropic grid, as one file's bytes."""
    image = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    image.SetSpacing((1.5, 2.0, 3.0))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"x{suffix}"
        sitk.WriteImage(image, str(path))
        return path.read_bytes()


ITK = {suffix: itk_bytes(suffix) for suffix in (".nrrd", ".mha")}
# Bytes of each header (the voxels follow): NRRD ends it with a blank line, MetaImage with the
# ElementDataFile field.
ITK_HEADER = {
    ".nrrd": ITK[".nrrd"].index(b"\n\n") + 2,
    ".mha": ITK[".mha"].index(b"LOCAL\n") + 6,
}
# Header text is mostly digits and separators: mutate towards what a parser will try to read.
header_bytes = st.sampled_from(list(b"0123456789-+.e :=(),\nx")) | st.integers(0, 255)


@FUZZ
@given(
    suffix=st.sampled_from(sorted(ITK)),
    changes=st.lists(st.tuples(st.integers(0, 10**6), header_bytes), min_size=1, max_size=6),
    cut=st.none() | st.integers(0, 10**6),
)
def test_itk_reader_survives_mutated_headers_and_truncation(
    suffix: str, changes: list[tuple[int, int]], cut: int | None
) -> None:
    data = mutate(ITK[suffix], [(o % ITK_HEADER[suffix], v) for o, v in changes])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"x{suffix}"
        path.write_bytes(data[: None if cut is None else cut % len(data)])
        read_or_refuse(lambda: read_itk(path, memory_budget=BUDGET))


def test_the_unmutated_samples_read() -> None:
    """The fuzzers start from files the readers accept (else every example is a refusal)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.nii"
        path.write_bytes(NIFTI)
        volume = read_nifti(path)
        assert volume.array.shape == (6, 5, 4)
        assert volume.array[1, 0, 0] == pytest.approx(10.0 + 0.5 * 20)
    for suffix, data in ITK.items():
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"x{suffix}"
            path.write_bytes(data)
            assert read_itk(path).array[1, 0, 0] == 1.0
    (study,) = scan_dicom(SERIES)
    assert read_study(study, DicomSection(), case_id="s").array.shape == (64, 64, 4)
