"""A NRRD or MetaImage header may name its voxel data files only inside its own folder (after
symlinks): absolute paths, ``..``, symlinks, LIST entries and printf patterns leading out fail
the case with one sentence before ITK opens anything; data in a subfolder still reads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from xaimed.cli import app
from xaimed.errors import InputError
from xaimed.io.image import read_image_arrays
from xaimed.io.itk import read_itk
from xaimed.writers.manifest import read_manifest

SHAPE = (4, 3, 2)  # x, y, z
NRRD = "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 3 2\nencoding: raw\n"
MHD = "ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_UCHAR\n"
REFUSED = (
    r"^case c: .*c\.{suffix}: the header names the data file {name}, which lies outside the "
    r"header's folder .*; move the data file next to the header"
)


def _header(suffix: str, data: str, extra: str = "") -> str:
    if suffix in ("nhdr", "nrrd"):
        return f"{NRRD}data file: {data}\n{extra}"
    return f"{MHD}ElementDataFile = {data}\n{extra}"


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """A case folder and, beside it, a folder holding a file no header may read."""
    case, other = tmp_path / "case", tmp_path / "other"
    case.mkdir()
    other.mkdir()
    (other / "secret.raw").write_bytes(bytes(range(24)))
    return case, other


def _refused(path: Path, name: str) -> None:
    pattern = REFUSED.format(suffix=path.suffix[1:], name=name)
    with pytest.raises(InputError, match=pattern) as raised:
        read_itk(path, case_id="c")
    assert str(raised.value).rstrip(".").count(". ") == 0  # one sentence


@pytest.mark.parametrize("suffix", ["nhdr", "mhd", "nrrd", "mha"])
def test_absolute_path_outside_is_refused(folders, suffix):
    # ITK follows a data file field in attached .nrrd/.mha files too.
    case, other = folders
    path = case / f"c.{suffix}"
    path.write_text(_header(suffix, str(other / "secret.raw")))
    _refused(path, r".*/other/secret\.raw")


@pytest.mark.parametrize("suffix", ["nhdr", "mhd"])
def test_dotdot_escape_is_refused(folders, suffix):
    case, _ = folders
    (case / "sub").mkdir()
    path = case / f"c.{suffix}"
    path.write_text(_header(suffix, "sub/../../other/secret.raw"))
    _refused(path, r"sub/\.\./\.\./other/secret\.raw")


@pytest.mark.parametrize("suffix", ["nhdr", "mhd"])
def test_symlink_escaping_is_refused(folders, suffix):
    case, other = folders
    (case / "c.raw").symlink_to(other / "secret.raw")
    path = case / f"c.{suffix}"
    path.write_text(_header(suffix, "c.raw"))
    _refused(path, r"c\.raw")


@pytest.mark.parametrize(("suffix", "data"), [("nhdr", "LIST 2"), ("mhd", "LIST 2D")])
def test_a_list_entry_escaping_is_refused(folders, suffix, data):
    case, _ = folders
    (case / "s0.raw").write_bytes(bytes(12))
    path = case / f"c.{suffix}"
    path.write_text(_header(suffix, data, "s0.raw\n../other/secret.raw\n"))
    _refused(path, r"\.\./other/secret\.raw")


@pytest.mark.parametrize("suffix", ["nhdr", "mhd"])
def test_a_printf_pattern_file_escaping_is_refused(folders, suffix):
    # Every existing file the pattern can name is checked, whatever range ITK would use.
    case, other = folders
    (case / "slices").mkdir()
    (case / "slices" / "s000.raw").write_bytes(bytes(12))
    (case / "slices" / "s001.raw").symlink_to(other / "secret.raw")
    path = case / f"c.{suffix}"
    path.write_text(_header(suffix, "slices/s%03d.raw 0 1 1 2"))
    _refused(path, r"slices/s%03d\.raw")
    path.write_text(_header(suffix, "../other/s%03d.raw 0 1 1 2"))
    _refused(path, r"\.\./other/s%03d\.raw")


def test_a_pattern_other_than_one_integer_is_refused(folders):
    # %s would hand ITK's sprintf an int as a string pointer.
    case, _ = folders
    path = case / "c.nhdr"
    path.write_text(_header("nhdr", "s%s.raw 0 1 1 2"))
    with pytest.raises(
        InputError,
        match=r"^case c: .*c\.nhdr: the header's data file pattern 's%s\.raw 0 1 1 2' is not",
    ):
        read_itk(path, case_id="c")


def _image(seed: int) -> sitk.Image:
    values = np.random.default_rng(seed).integers(0, 200, size=SHAPE[::-1]).astype(np.int16)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.8, 1.2, 2.5))
    return image


@pytest.mark.parametrize(
    ("suffix", "key"), [("nhdr", "data file: "), ("mhd", "ElementDataFile = ")]
)
def test_data_in_a_subfolder_and_symlinks_inside_still_read(folders, suffix, key):
    case, _ = folders
    image = _image(1)
    path = case / f"c.{suffix}"
    sitk.WriteImage(image, str(path))
    (case / "data" / "deep").mkdir(parents=True)
    (case / "c.raw").rename(case / "data" / "deep" / "c.raw")
    path.write_text(path.read_text().replace(f"{key}c.raw", f"{key}data/deep/c.raw"))
    expected = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    np.testing.assert_array_equal(read_itk(path, case_id="c").array, expected)
    # A symlink that stays inside the folder is fine.
    (case / "link.raw").symlink_to(Path("data") / "deep" / "c.raw")
    path.write_text(path.read_text().replace(f"{key}data/deep/c.raw", f"{key}link.raw"))
    np.testing.assert_array_equal(read_itk(path, case_id="c").array, expected)
    np.testing.assert_array_equal(read_image_arrays(path)[0], expected)


def test_a_mask_or_map_file_read_back_is_checked_too(folders):
    case, other = folders
    path = case / "m.mhd"
    path.write_text(_header("mhd", os.path.relpath(other / "secret.raw", case)))
    with pytest.raises(ValueError, match=r"m\.mhd: the header names the data file .*outside"):
        read_image_arrays(path)


def test_one_escaping_case_fails_alone_and_the_run_goes_on(tmp_path, make_config):
    folder, other = tmp_path / "in", tmp_path / "other"
    (folder / "data").mkdir(parents=True)
    other.mkdir()
    shape = (20, 18, 14)
    values = np.random.default_rng(2).normal(100, 20, size=shape[::-1]).astype(np.int16)
    good = sitk.GetImageFromArray(values)
    sitk.WriteImage(good, str(folder / "good.nhdr"))
    (folder / "good.raw").rename(folder / "data" / "good.raw")
    header = (folder / "good.nhdr").read_text()
    (folder / "good.nhdr").write_text(
        header.replace("data file: good.raw", "data file: data/good.raw")
    )
    sitk.WriteImage(good, str(other / "secret.nhdr"))
    (folder / "evil.nhdr").write_text(
        header.replace("data file: good.raw", "data file: ../other/secret.raw")
    )
    out = tmp_path / "out"
    config = make_config(outputs={"png": False, "format": "same"})
    result = CliRunner().invoke(
        app, ["explain", str(folder), "--config", str(config), "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 1
    rows = {r["case_id"]: r for r in read_manifest(out / "manifest.csv")}
    assert rows["good"]["status"] == "ok", rows["good"]["error"]
    assert Path(rows["good"]["nifti"]).suffix == ".nrrd"
    assert rows["evil"]["status"] == "failed"
    assert rows["evil"]["error"].startswith("case evil: ")
    assert "names the data file ../other/secret.raw, which lies outside" in rows["evil"]["error"]
    assert not (out / "evil").exists() or not any((out / "evil").rglob("*.nrrd"))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        # Spellings ITK follows (each tried with SimpleITK): a field after 300 comment lines,
        # any case, "datafile"; MetaIO skips blank lines and takes ":" as well as "=".
        ("c.nhdr", NRRD + "#\n" * 300 + "data file: ../other/secret.raw\n"),
        ("c.nhdr", NRRD + "Data File: ../other/secret.raw\n"),
        ("c.nhdr", NRRD + "datafile: ../other/secret.raw\n"),
        ("c.mhd", MHD + "\n\nElementDataFile = ../other/secret.raw\n"),
        ("c.mhd", MHD + "ElementDataFile: ../other/secret.raw\n"),
    ],
)
def test_every_spelling_itk_follows_is_checked(folders, name, text):
    case, _ = folders
    (case / name).write_text(text)
    _refused(case / name, r"\.\./other/secret\.raw")


def test_a_listed_name_with_a_percent_sign_is_checked_as_a_file_too(folders):
    # MetaIO opens LIST entries as they are, % included: the literal file is checked as well
    # as what the name would expand to as a pattern.
    case, other = folders
    (case / "s%d.raw").symlink_to(other / "secret.raw")
    path = case / "c.mhd"
    path.write_text(_header("mhd", "LIST 2D", "s%d.raw\n"))
    _refused(path, r"s%d\.raw")


def test_a_header_too_long_to_check_is_refused(folders):
    # Its LIST is not checked in part: the whole header is read or the case fails.
    case, _ = folders
    path = case / "c.nhdr"
    path.write_text(_header("nhdr", "LIST 2", "s0.raw\n" * (17 * 2**20 // 7)))
    with pytest.raises(
        InputError, match=r"^case c: .*c\.nhdr: the header .* is longer than 16 MiB"
    ):
        read_itk(path, case_id="c")
