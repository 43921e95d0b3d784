"""NRRD and MetaImage in and out through SimpleITK: geometry to 1e-4 mm, vector images, broken
detached headers, discovery of mixed folders and ``outputs.format`` end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml
from conftest import blob_volume, oblique_affine, tiny_config, write_nifti
from tiny_models import TinyCNN2D
from typer.testing import CliRunner

from xaimed.cli import app
from xaimed.config import OutputsSection
from xaimed.errors import InputError
from xaimed.evaluate.masks import read_mask
from xaimed.io.case import Case
from xaimed.io.cases import discover_cases
from xaimed.io.image import read_image_arrays
from xaimed.io.itk import read_itk
from xaimed.io.nifti import read_nifti
from xaimed.io.read import resolve_listed
from xaimed.report.volumes import read_source
from xaimed.writers.manifest import read_manifest
from xaimed.writers.nifti import write_nifti_map
from xaimed.writers.volume import map_format, write_label_volume, write_map_volume

TESTS = Path(__file__).parent
SHAPE = (7, 6, 5)  # x, y, z: distinct so that a transposed axis cannot pass


def _direction(angle: float, flips: tuple[int, int, int]) -> np.ndarray:
    """An oblique LPS direction (rotation about two axes), axes possibly flipped."""
    c, s = np.cos(angle), np.sin(angle)
    rot_z = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    rot_x = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return rot_z @ rot_x @ np.diag(flips)


GRIDS = {
    "oblique": ((0.7, 1.3, 2.9), _direction(0.3, (1, 1, 1)), (-12.25, 40.5, 3.125)),
    "flipped": ((1.0, 1.0, 4.0), _direction(0.0, (-1, 1, -1)), (100.0, -20.0, -55.5)),
    "oblique-flipped": ((2.5, 0.6, 1.1), _direction(-0.45, (1, -1, -1)), (0.3, 0.7, -9.9)),
}


def _itk_image(grid: str, components: int = 1) -> sitk.Image:
    spacing, direction, origin = GRIDS[grid]
    rng = np.random.default_rng(1)
    zyx = SHAPE[::-1] + ((components,) if components > 1 else ())
    image = sitk.GetImageFromArray(rng.normal(size=zyx).astype(np.float32), components > 1)
    image.SetSpacing(spacing)
    image.SetDirection(tuple(direction.ravel()))
    image.SetOrigin(origin)
    return image


def _corners(shape: tuple[int, ...]) -> list[tuple[float, float, float]]:
    """The outer corners of the grid's corner voxels, in continuous index."""
    return list(itertools.product(*[(-0.5, n - 0.5) for n in shape[:3]]))


def _itk_world_ras(image: sitk.Image, index: tuple[float, float, float]) -> np.ndarray:
    x, y, z = image.TransformContinuousIndexToPhysicalPoint(index)  # LPS
    return np.array([-x, -y, z])


def _affine_world(affine: np.ndarray, index: tuple[float, float, float]) -> np.ndarray:
    return (affine @ np.array([*index, 1.0]))[:3]


def _assert_same_world(image: sitk.Image, affine: np.ndarray) -> None:
    for corner in _corners(image.GetSize()):
        np.testing.assert_allclose(
            _itk_world_ras(image, corner), _affine_world(affine, corner), rtol=0, atol=1e-4
        )


def _assert_same_itk_geometry(a: sitk.Image, b: sitk.Image) -> None:
    # NRRD stores direction x spacing: reading it back may move the last bit of each.
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(a, get)(), getattr(b, get)(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nhdr", ".mhd"])
@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_read_keeps_values_and_world_geometry(tmp_path, grid, suffix):
    image = _itk_image(grid)
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(image, str(path))
    volume = read_itk(path)
    written = sitk.ReadImage(str(path))
    assert volume.array.shape == SHAPE and volume.array.dtype == np.float32
    for index in [(0, 0, 0), (6, 0, 0), (0, 5, 0), (0, 0, 4), (3, 2, 1)]:
        assert volume.array[index] == written.GetPixel(*index)
    _assert_same_world(written, volume.affine)
    assert volume.spacing == pytest.approx(GRIDS[grid][0], abs=1e-9)


def test_vector_image_keeps_components_on_axis_3(tmp_path):
    image = _itk_image("oblique", components=3)
    sitk.WriteImage(image, str(tmp_path / "rgb.nrrd"))
    volume = read_itk(tmp_path / "rgb.nrrd")
    assert volume.array.shape == (*SHAPE, 3)
    assert tuple(volume.array[4, 1, 2]) == pytest.approx(image.GetPixel(4, 1, 2))
    _assert_same_world(image, volume.affine)


@pytest.mark.parametrize("fmt", ["nrrd", "mha"])
@pytest.mark.parametrize("axcodes", ["LPS", "LAS", "RAI"])
def test_map_of_a_nifti_source_lies_on_its_grid(tmp_path, fmt, axcodes):
    affine = oblique_affine((0.9, 1.7, 3.1), axcodes, angle=0.35)
    source = read_nifti(write_nifti(tmp_path / "src.nii.gz", blob_volume(SHAPE), affine))
    values = np.random.default_rng(2).normal(size=SHAPE).astype(np.float32)
    outputs = OutputsSection(format=fmt, compress=True)
    path = write_map_volume(source.with_array(values), tmp_path, "m", outputs, method="saliency")
    assert path == tmp_path / f"m.{fmt}"
    written = sitk.ReadImage(str(path))
    assert written.GetMetaData("xaimed_method") == "saliency"
    _assert_same_world(written, nib.load(str(tmp_path / "src.nii.gz")).affine)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written).transpose(2, 1, 0), values)
    again = write_map_volume(
        source.with_array(values), tmp_path / "again", "m", outputs, method="saliency"
    )
    assert again.read_bytes() == path.read_bytes()  # deterministic: no time stamps
    back, back_affine = read_image_arrays(path)
    np.testing.assert_array_equal(back, values)
    np.testing.assert_allclose(back_affine, source.affine, rtol=0, atol=1e-9)


@pytest.mark.parametrize("suffix", [".nrrd", ".mhd"])
def test_map_of_an_itk_source_repeats_its_header_geometry(tmp_path, suffix):
    sitk.WriteImage(_itk_image("oblique-flipped"), str(tmp_path / f"src{suffix}"))
    image = sitk.ReadImage(str(tmp_path / f"src{suffix}"))  # the source as stored
    source = read_itk(tmp_path / f"src{suffix}")
    outputs = OutputsSection(format="same", compress=False)
    path = write_map_volume(source.with_array(source.array * 2), tmp_path, "m", outputs, method="x")
    assert path.suffix == (".nrrd" if suffix == ".nrrd" else ".mha")
    written = sitk.ReadImage(str(path))
    _assert_same_itk_geometry(written, image)
    labels = source.with_array(np.argmax(np.stack([source.array, -source.array]), axis=0))
    names = {0: "a", 1: "b\nc"}  # a line break in a class name must not break the header
    label_path = write_label_volume(labels, tmp_path, "dominant", outputs, labels=names)
    label_image = sitk.ReadImage(str(label_path))
    assert label_image.GetPixelID() == sitk.sitkInt16
    _assert_same_itk_geometry(label_image, image)
    assert label_image.GetMetaData("description") == "xaimed dominant class: 0=a, 1=b c"
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(label_image).transpose(2, 1, 0), labels.array
    )


def test_nifti_format_writes_what_the_nifti_writer_writes(tmp_path):
    source = read_nifti(
        write_nifti(tmp_path / "src.nii.gz", blob_volume(SHAPE), oblique_affine(axcodes="LAS"))
    )
    heatmap = source.with_array(np.linspace(-1, 1, source.array.size).reshape(SHAPE))
    for fmt in ("nifti", "same"):
        path = write_map_volume(
            heatmap, tmp_path / fmt, "m", OutputsSection(format=fmt), method="s"
        )
        direct = write_nifti_map(heatmap, tmp_path / f"direct-{fmt}.nii.gz", method="s")
        assert path.name == "m.nii.gz"
        assert path.read_bytes() == direct.read_bytes()


@pytest.mark.parametrize(
    ("header", "data_key"), [(".mhd", "ElementDataFile"), (".nhdr", "data file")]
)
def test_detached_header_without_its_data_file_names_both(tmp_path, header, data_key):
    path = tmp_path / f"c7{header}"
    sitk.WriteImage(_itk_image("oblique"), str(path))
    assert data_key in path.read_text()
    (tmp_path / "c7.raw").unlink()
    with pytest.raises(
        InputError,
        match=r"^case c7: .*c7\.(mhd|nhdr): its voxel data file .*c7\.raw does not exist",
    ):
        read_itk(path, case_id="c7")
    with pytest.raises(InputError, match=r"^case c8: .*c8\.(mhd|nhdr): file not found"):
        read_itk(tmp_path / f"c8{header}", case_id="c8")
    (tmp_path / "c7.raw").write_bytes(b"\0" * 17)  # truncated
    with pytest.raises(
        # MetaImage: the size is checked before SimpleITK reads (test_userpass_itk.py)
        InputError,
        match=r"^case c7: .*: the voxel data in .*c7\.raw (cannot be read|is truncated \(17 b)",
    ):
        read_itk(path, case_id="c7")


@pytest.mark.parametrize(
    ("ndims", "message"),
    [
        ("-3", "not a readable MetaImage header"),
        ("83", "the image has 83 dimensions"),
        ("4", "the image has 4 dimensions"),
    ],
)
def test_metaimage_ndims_other_than_2_or_3_is_refused_before_simpleitk(tmp_path, ndims, message):
    # SimpleITK's MetaImage parser crashes the process on NDims -3 or 83 (found by fuzzing).
    path = tmp_path / "x.mha"
    sitk.WriteImage(_itk_image("flipped"), str(path))
    path.write_bytes(path.read_bytes().replace(b"NDims = 3", f"NDims = {ndims}".encode(), 1))
    with pytest.raises(InputError, match=rf"^case x: .*x\.mha: {message}"):
        read_itk(path, case_id="x")


def test_declared_size_is_checked_before_the_voxels_are_read(tmp_path):
    path = tmp_path / "huge.nhdr"
    path.write_text(
        "NRRD0004\ntype: float\ndimension: 3\nsizes: 4000 4000 4000\nencoding: raw\n"
        "endian: little\ndata file: huge.raw\n"
    )
    (tmp_path / "huge.raw").write_bytes(b"\0" * 64)
    with pytest.raises(
        InputError, match=r"declares 4000 x 4000 x 4000 voxels.*runtime.memory_budget"
    ):
        read_itk(path, case_id="huge", memory_budget=2**30)


def test_non_finite_and_overflowing_voxels_meet_the_nan_check(tmp_path):
    from xaimed.config import PreprocessingSection
    from xaimed.preprocess import prepare

    values = np.ones(SHAPE[::-1])
    values[1, 2, 3], values[2, 2, 2] = np.nan, 1e300  # float64: beyond float32 once read
    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / "bad.nrrd"))
    volume = read_itk(tmp_path / "bad.nrrd")
    with pytest.raises(InputError, match=r"bad\.nrrd: 2 voxels are NaN or infinite"):
        prepare(volume, PreprocessingSection())
    filled = prepare(volume, PreprocessingSection(nan_fill=0.0))
    assert np.isfinite(filled.array).all()


def test_a_label_map_on_the_grid_may_be_nrrd_and_dicom_maps_stay_nifti(tmp_path):
    from xaimed.config import PreprocessingSection
    from xaimed.methods.casefiles import CaseFiles
    from xaimed.preprocess import prepare
    from xaimed.volume import Source

    sitk.WriteImage(_itk_image("oblique"), str(tmp_path / "c1.nrrd"))
    source = read_itk(tmp_path / "c1.nrrd")
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[2:4, 1:3, 0:2] = 5
    label_image = sitk.GetImageFromArray(labels.transpose(2, 1, 0))
    label_image.CopyInformation(sitk.ReadImage(str(tmp_path / "c1.nrrd")))
    sitk.WriteImage(label_image, str(tmp_path / "c1_mask.mha"))
    section = PreprocessingSection()
    case = CaseFiles("c1", prepare(source, section), section, base_dir=tmp_path)
    np.testing.assert_array_equal(case.labels("{case_id}_mask.mha", "target.mask"), labels)
    dicom = source.with_array(source.array)
    dicom = type(dicom)(dicom.array, dicom.affine, Source(tmp_path, "dicom"))
    assert map_format(OutputsSection(format="same"), dicom) == "nifti"
    assert map_format(OutputsSection(format="same"), source) == "nrrd"
    assert map_format(OutputsSection(format="mha"), source) == "mha"


def test_discovery_of_a_mixed_folder(tmp_path):
    from dicom_helpers import write_study

    folder = tmp_path / "in"
    write_nifti(folder / "a.nii.gz", blob_volume(SHAPE), oblique_affine())
    for name in ("a.nrrd", "b.nhdr", "sub/c.mha", "sub/d.mhd"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(_itk_image("flipped"), str(folder / name))
    write_study(folder / "dicom", shape=(6, 5, 4))
    cases = discover_cases(folder)
    by_path = {c.path.relative_to(folder).as_posix(): c for c in cases}
    formats = {path: case.format for path, case in by_path.items()}
    assert formats == {
        "a.nii.gz": "nifti", "a.nrrd": "itk", "b.nhdr": "itk", "sub/c.mha": "itk",
        "sub/d.mhd": "itk", "dicom": "dicom",
    }  # fmt: skip  # the .raw data files are no cases, nor scanned as DICOM
    assert {by_path[p].case_id for p in ("b.nhdr", "sub/c.mha", "sub/d.mhd")} == {"b", "c", "d"}
    # a.nii.gz and a.nrrd would share one output folder: both get a stable suffix
    assert by_path["a.nii.gz"].case_id.startswith("a-") and by_path["a.nrrd"].case_id.startswith(
        "a-"
    )
    assert len({c.case_id for c in cases}) == len(cases)
    assert [c.case_id for c in discover_cases(folder / "b.nhdr")] == ["b"]


def test_case_list_entry_of_each_itk_suffix(tmp_path):
    for suffix in (".nrrd", ".nhdr", ".mha", ".mhd"):
        sitk.WriteImage(_itk_image("flipped"), str(tmp_path / f"x{suffix}"))
        located = resolve_listed(Case("x", tmp_path / f"x{suffix}", format=None))
        assert located.format == "itk"
    with pytest.raises(InputError, match="must be a NIfTI, NRRD or MetaImage file"):
        resolve_listed(Case("x", tmp_path / "x.raw", format=None))


def test_explain_with_format_same_writes_maps_on_the_source_geometry(tmp_path, make_config):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(3)
    shape = (20, 18, 14)
    for name, grid in (
        ("n1.nrrd", "oblique"),
        ("m1.mha", "oblique-flipped"),
        ("gone.mhd", "flipped"),
    ):
        spacing, direction, origin = GRIDS[grid]
        image = sitk.GetImageFromArray(
            (blob_volume(shape) + rng.normal(0, 1, shape)).transpose(2, 1, 0).astype(np.int16)
        )
        image.SetSpacing(spacing)
        image.SetDirection(tuple(direction.ravel()))
        image.SetOrigin(origin)
        sitk.WriteImage(image, str(folder / name))
    (folder / "gone.raw").unlink()
    config = make_config(outputs={"png": False, "format": "same"})
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["explain", str(folder), "--config", str(config), "--out", str(out), "--quiet"]
    )
    assert result.exit_code != 0  # one case failed; the others are done
    rows = {r["case_id"]: r for r in read_manifest(out / "manifest.csv")}
    assert rows["gone"]["status"] == "failed"
    assert rows["gone"]["error"].startswith("case gone: ")
    assert "gone.raw does not exist" in rows["gone"]["error"]
    for case_id, suffix in (("n1", ".nrrd"), ("m1", ".mha")):
        row = rows[case_id]
        assert row["status"] == "ok", row["error"]
        map_path = Path(row["nifti"])
        assert map_path.suffix == suffix and map_path.is_file()
        source, written = sitk.ReadImage(row["source"]), sitk.ReadImage(str(map_path))
        assert written.GetSize() == source.GetSize()
        _assert_same_itk_geometry(written, source)
        _assert_same_world(written, read_itk(Path(row["source"])).affine)
        assert written.GetPixelID() == sitk.sitkFloat32
        assert np.abs(sitk.GetArrayViewFromImage(written)).max() > 0
        sidecar = json.loads(Path(row["sidecar"]).read_text())
        assert sidecar["method"]["name"] == "saliency"
        # The report found the map and its source in the new formats.
        for name in ("map0.js", "source.js"):
            assert (out / "report" / "data" / "cases" / case_id / name).is_file()
    notes = json.loads((out / "report" / "report.json").read_text())["notes"]
    assert not [n for n in notes if "n1" in n or "m1" in n]


# ------------------------------------------------------------------ 2D files

PLANE = (9, 7)  # x, y of a 2D image: distinct so that a transposed axis cannot pass


def _itk_plane(rng: np.random.Generator | None = None) -> sitk.Image:
    """A 2D image with anisotropic spacing, an off-centre origin and a rotated, flipped
    direction."""
    rng = rng or np.random.default_rng(5)
    i, j = np.meshgrid(np.arange(PLANE[0]), np.arange(PLANE[1]), indexing="ij")
    blob = 300 * np.exp(-((i - 3) ** 2 + (j - 4) ** 2) / 5.0) + rng.normal(0, 10, PLANE)
    image = sitk.GetImageFromArray(blob.T.astype(np.int16))  # SimpleITK takes (y, x)
    c, s = np.cos(0.4), np.sin(0.4)
    image.SetSpacing((0.35, 1.15))
    image.SetDirection((c, s, s, -c))  # a rotation with one axis flipped
    image.SetOrigin((-41.5, 17.25))
    return image


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_a_2d_file_is_read_as_a_plane_on_simpleitks_world(tmp_path, suffix):
    path = tmp_path / f"cxr{suffix}"
    sitk.WriteImage(_itk_plane(), str(path))
    written = sitk.ReadImage(str(path))
    volume = read_itk(path)
    assert volume.array.shape == (*PLANE, 1) and volume.is_2d
    assert volume.meta["spatial_dims"] == 2
    for i, j in itertools.product(range(PLANE[0]), range(PLANE[1])):
        assert volume.array[i, j, 0] == written.GetPixel(i, j)
        x, y = written.TransformIndexToPhysicalPoint((i, j))  # LPS, the plane z = 0
        world = (volume.affine @ np.array([i, j, 0.0, 1.0]))[:3]
        np.testing.assert_allclose(world, [-x, -y, 0.0], rtol=0, atol=1e-4)
    normal = volume.affine[:3, 2]
    assert np.linalg.norm(normal) == pytest.approx(1.0)
    assert np.allclose(normal @ volume.affine[:3, :2], 0.0)
    # Maps and masks are read back as 2D arrays with the same affine, like a 2D NIfTI.
    data, affine = read_image_arrays(path)
    assert data.shape == PLANE
    np.testing.assert_array_equal(data, volume.array[..., 0])
    np.testing.assert_allclose(affine, volume.affine, rtol=0, atol=1e-12)


def test_2d_nrrd_explained_by_a_2d_model_gives_a_2d_map_on_its_geometry(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    sitk.WriteImage(_itk_plane(), str(folder / "cxr.nrrd"))
    sitk.WriteImage(_itk_plane(np.random.default_rng(6)), str(folder / "flat.mha"))
    torch.manual_seed(0)
    torch.save(TinyCNN2D().state_dict(), tmp_path / "tiny2d.pt")
    config = tmp_path / "config.yaml"
    sections = tiny_config(tmp_path / "tiny2d.pt", outputs={"png": False, "format": "same"})
    sections["model"] |= {"architecture": "tiny_models:TinyCNN2D", "spatial_dims": 2}
    config.write_text(yaml.safe_dump(sections))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["explain", str(folder), "--config", str(config), "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    rows = {r["case_id"]: r for r in read_manifest(out / "manifest.csv")}
    for case_id, suffix in (("cxr", ".nrrd"), ("flat", ".mha")):
        row = rows[case_id]
        assert row["status"] == "ok", row["error"]
        map_path = Path(row["nifti"])
        assert map_path.suffix == suffix
        source, written = sitk.ReadImage(row["source"]), sitk.ReadImage(str(map_path))
        assert written.GetDimension() == 2 and written.GetSize() == source.GetSize() == PLANE
        _assert_same_itk_geometry(written, source)
        assert np.abs(sitk.GetArrayViewFromImage(written)).max() > 0
        assert json.loads(Path(row["sidecar"]).read_text())["source"]["spatial_dims"] == 2
        for name in ("map0.js", "source.js"):  # the report read the 2D map and source back
            assert (out / "report" / "data" / "cases" / case_id / name).is_file()
    notes = json.loads((out / "report" / "report.json").read_text())["notes"]
    assert not [n for n in notes if "cxr" in n or "flat" in n]


def test_a_2d_metaimage_for_a_3d_model_fails_its_case_in_one_sentence(tmp_path, make_config):
    folder = tmp_path / "in"
    folder.mkdir()
    sitk.WriteImage(_itk_plane(), str(folder / "cxr.mha"))
    config = make_config(outputs={"png": False, "format": "same"})
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["explain", str(folder), "--config", str(config), "--out", str(out), "--quiet"]
    )
    assert result.exit_code != 0
    (row,) = read_manifest(out / "manifest.csv")
    assert row["status"] == "failed"
    assert row["error"].startswith("case cxr: the image is 2D (9, 7) but the model is 3D")
    assert row["error"].rstrip(".").count(". ") == 0


@pytest.mark.parametrize(
    ("affine", "dims"),
    [
        # In the plane z = 0: a 2D file, like a 2D NRRD's own.
        (np.array([[-0.5, 0, 0, 3.0], [0, 0.8, 0, -4.0], [0, 0, 1, 0], [0, 0, 0, 1]]), 2),
        # A coronal plane off z = 0: only a 3D file of depth 1 keeps where it lies.
        (np.array([[-0.7, 0, 0, 40.0], [0, 0, -1.0, 12.0], [0, -0.9, 0, 90.0], [0, 0, 0, 1]]), 3),
    ],
)
def test_nrrd_map_of_a_2d_nifti_keeps_its_plane(tmp_path, affine, dims):
    data = np.random.default_rng(4).normal(size=PLANE).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "cxr.nii.gz")
    source = read_nifti(tmp_path / "cxr.nii.gz")
    outputs = OutputsSection(format="nrrd", compress=True)
    values = source.array * 2
    path = write_map_volume(source.with_array(values), tmp_path, "m", outputs, method="saliency")
    written = sitk.ReadImage(str(path))
    assert written.GetDimension() == dims
    back, back_affine = read_image_arrays(path)
    np.testing.assert_array_equal(back.reshape(values.shape), values)
    np.testing.assert_allclose(back_affine[:, [0, 1, 3]], source.affine[:, [0, 1, 3]], atol=1e-6)
    # The report shows the 2D source under either map.
    shown = read_source("cxr", tmp_path / "cxr.nii.gz", None, back.shape)
    np.testing.assert_array_equal(shown.reshape(PLANE), data)


def test_a_2d_nrrd_mask_lies_on_its_2d_source(tmp_path):
    source_path, mask_path = tmp_path / "cxr.mha", tmp_path / "cxr_mask.nrrd"
    image = _itk_plane()
    sitk.WriteImage(image, str(source_path))
    labels = np.zeros(PLANE, dtype=np.uint8)
    labels[2:5, 3:6] = 1
    mask = sitk.GetImageFromArray(labels.T)
    mask.CopyInformation(image)
    sitk.WriteImage(mask, str(mask_path))
    inside = read_mask(mask_path, read_itk(source_path), "cxr")
    assert inside.shape == (*PLANE, 1)
    np.testing.assert_array_equal(inside[..., 0], labels > 0)
    mask.SetOrigin((0.0, 0.0))
    sitk.WriteImage(mask, str(mask_path))
    with pytest.raises(InputError, match=r"^case cxr: mask .* is not on the image's grid"):
        read_mask(mask_path, read_itk(source_path), "cxr")
