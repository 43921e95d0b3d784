"""Hostile single-frame DICOM: each damaged header is one sentence naming the file and the cause
(no pydicom internals), and a damaged study is a failed case, not a log line.

Radiographs are written with :func:`xaimed.sample.radiograph_dicom.write_radiograph`, then one
attribute is broken per test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from xaimed.config.schema import DicomSection
from xaimed.errors import InputError
from xaimed.io.dicom import scan_dicom
from xaimed.io.dicom.select import read_study
from xaimed.sample.radiograph_dicom import write_radiograph
from xaimed.volume import Volume

SHAPE = (16, 12)  # (X, Y)


def _image() -> np.ndarray:
    x, y = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    return (x * 200 + y * 13).astype(np.float64)  # 0 .. 3143: fits 12 bits unscaled


def _cr(folder: Path, seed: str) -> Path:
    """A CR that reads back as its values (identity rescale, the LINEAR window of 0 .. 4095)."""
    return write_radiograph(
        _image(), folder / "IM1", kind="CR", uid_seed=seed, scale=False, window=(2048, 4096)
    )


def _read(folder: Path) -> Volume:
    (study,) = scan_dicom(folder)
    return read_study(study, DicomSection(), case_id="xr")


def test_multiframe_radiograph_is_named_as_such_and_the_other_study_reads(tmp_path):
    bad = _cr(tmp_path / "multi", "multi")
    ds = pydicom.dcmread(bad)
    frame = ds.pixel_array
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack([frame] * 3).tobytes()
    ds.save_as(bad)
    _cr(tmp_path / "good", "good")
    studies = scan_dicom(tmp_path)
    assert len(studies) == 2  # the multi-frame study is a case too, not dropped
    outcomes = {}
    for study in studies:
        try:
            outcomes[study.folder.name] = read_study(study, DicomSection(), case_id="xr")
        except InputError as exc:
            outcomes[study.folder.name] = str(exc)
    assert isinstance(outcomes["good"], Volume)
    message = outcomes["multi"]
    assert message.startswith("case xr: no image series of the study can be read: ")
    assert "a multi-frame CR image (3 frames)" in message
    assert "Image Position / Orientation (Patient), so its place" not in message  # not blamed


def test_study_with_no_readable_series_is_a_failing_case(tmp_path):
    path = _cr(tmp_path / "zero", "zero")
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = [0, 0]
    del ds.ImagerPixelSpacing
    ds.save_as(path)
    (study,) = scan_dicom(tmp_path)
    assert study.folder == tmp_path / "zero"
    with pytest.raises(InputError, match=r"^case xr: .*pixel spacing is not a finite, positive"):
        read_study(study, DicomSection(), case_id="xr")
