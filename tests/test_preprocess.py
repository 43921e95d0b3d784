"""Preprocessing and its inverse: grids restored exactly, values where they belong."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import blob_volume, oblique_affine

from xaimed.config import PreprocessingSection
from xaimed.errors import InputError
from xaimed.preprocess import prepare
from xaimed.volume import Source, Volume


def _volume(data, affine=None, name="case.nii.gz") -> Volume:
    from pathlib import Path

    affine = oblique_affine() if affine is None else affine
    return Volume(np.asarray(data, dtype=np.float32), affine, Source(Path(name), "nifti"))


def _prep(**steps):
    return PreprocessingSection.model_validate(steps)


ALL_STEPS = {
    "reorient": "RAS",
    "resample": {"spacing": [2.5, 2.5, 2.5]},
    "intensity": {"kind": "zscore"},
    "crop_pad": {"size": [12, 9, 20]},
}


@pytest.mark.parametrize("axcodes", ["LPS", "LAS", "RAS", "SIL"])
@pytest.mark.parametrize("steps", [{}, {"reorient": "RAS"}, ALL_STEPS])
def test_inverse_restores_source_grid(axcodes, steps):
    volume = _volume(blob_volume(), oblique_affine((1.5, 2.0, 3.0), axcodes))
    prepared = prepare(volume, _prep(**steps))
    back = prepared.invert_map(np.ones_like(prepared.array))
    assert back.spatial_shape == volume.spatial_shape
    np.testing.assert_array_equal(back.affine, volume.affine)
    assert back.array.dtype == np.float32


@pytest.mark.parametrize("axcodes", ["LPS", "LAS", "SIL"])
def test_reorient_and_crop_pad_move_voxels_exactly(axcodes):
    volume = _volume(blob_volume(), oblique_affine((1.5, 2.0, 3.0), axcodes))
    prepared = prepare(volume, _prep(reorient="RAS", crop_pad={"size": [24, 10, 16]}))
    assert "".join(nib.aff2axcodes(prepared.affine)) == "RAS"
    # Every model voxel holds the source voxel at the same world position ...
    ijk = np.argwhere(np.ones(prepared.array.shape[1:], bool))
    world = prepared.affine @ np.c_[ijk, np.ones(len(ijk))].T
    src = np.linalg.solve(volume.affine, world)[:3].round().astype(int).T
    inside = np.all((src >= 0) & (src < volume.spatial_shape), axis=1)
    got = prepared.array[0][tuple(ijk[inside].T)]
    np.testing.assert_array_equal(got, volume.array[tuple(src[inside].T)])
    # ... and the inverse of an arbitrary map puts each value back at that position.
    values = np.random.default_rng(1).random(prepared.array.shape, dtype=np.float32)
    back = prepared.invert_map(values).array
    np.testing.assert_array_equal(back[tuple(src[inside].T)], values[0][tuple(ijk[inside].T)])
    # Cropped-away source voxels get 0: no attribution where the model did not look.
    seen = np.zeros(volume.spatial_shape, bool)
    seen[tuple(src[inside].T)] = True
    assert np.all(back[~seen] == 0)


def test_without_steps_the_volume_reaches_the_model_as_it_is():
    data = blob_volume()
    prepared = prepare(_volume(data), _prep())
    assert prepared.array.shape == (1, *data.shape)
    np.testing.assert_array_equal(prepared.array[0], data.astype(np.float32))
    np.testing.assert_array_equal(prepared.invert_map(prepared.array).array, prepared.array[0])


def test_resample_round_trip_of_smooth_map():
    affine = oblique_affine((1.0, 1.0, 2.0), "LPS")
    volume = _volume(np.zeros((30, 26, 14)), affine)
    prepared = prepare(volume, _prep(resample={"spacing": [2.0, 2.0, 2.0]}))
    assert prepared.array.shape == (1, 15, 13, 14)
    np.testing.assert_allclose(np.linalg.norm(prepared.affine[:3, :3], axis=0), [2, 2, 2])

    # A map linear in world coordinates survives the round trip (linear interpolation is exact
    # on linear functions away from the border).
    def world_x(aff, shape):
        ijk = np.indices(shape).reshape(3, -1)
        return (aff[:3, :3] @ ijk + aff[:3, 3:])[0].reshape(shape)

    model_map = world_x(prepared.affine, prepared.array.shape[1:])[None].astype(np.float32)
    back = prepared.invert_map(model_map).array
    expected = world_x(affine, volume.spatial_shape)
    np.testing.assert_allclose(back[2:-2, 2:-2, 1:-1], expected[2:-2, 2:-2, 1:-1], atol=1e-3)


def test_resample_centres_the_new_grid_on_the_old():
    affine = oblique_affine((1.0, 1.0, 1.0), "RAS")
    volume = _volume(np.zeros((10, 10, 10)), affine)
    prepared = prepare(volume, _prep(resample={"spacing": [3.0, 3.0, 3.0]}))
    centre_old = affine @ [4.5, 4.5, 4.5, 1]
    n = np.array(prepared.array.shape[1:])
    centre_new = prepared.affine @ [*((n - 1) / 2), 1]
    np.testing.assert_allclose(centre_new, centre_old, atol=1e-9)


def test_intensity_steps():
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) * 10 - 50
    z = prepare(_volume(data), _prep(intensity={"kind": "zscore"})).array[0]
    assert z.mean() == pytest.approx(0, abs=1e-6) and z.std() == pytest.approx(1, abs=1e-5)
    w = prepare(_volume(data), _prep(intensity={"kind": "window", "level": 40, "width": 100}))
    np.testing.assert_allclose(w.array[0], np.clip((data + 10) / 100, 0, 1), atol=1e-6)
    p = prepare(_volume(data), _prep(intensity={"kind": "percentile", "low": 0, "high": 100}))
    assert p.array.min() == 0 and p.array.max() == 1
    assert w.sidecar_fields()[-1] == {
        "step": "intensity",
        "kind": "window",
        "level": 40.0,
        "width": 100.0,
        "clip": True,
        "range": [[-10.0, 90.0]],
    }


def test_channels_from_last_axis_repeat_and_reduce():
    data = np.random.default_rng(0).random((5, 4, 3, 2), dtype=np.float32)
    steps = _prep(channels={"source": "last_axis", "repeat": 3, "reduce_map": "sum"})
    prepared = prepare(_volume(data), steps)
    assert prepared.array.shape == (6, 5, 4, 3)
    np.testing.assert_array_equal(prepared.array[0], data[..., 0])
    np.testing.assert_array_equal(prepared.array[2], data[..., 0])
    np.testing.assert_array_equal(prepared.array[3], data[..., 1])
    back = prepared.invert_map(np.ones_like(prepared.array)).array
    np.testing.assert_array_equal(back, np.full((5, 4, 3), 6.0))
    mean = prepare(_volume(data), _prep(channels={"source": "last_axis", "reduce_map": "mean"}))
    np.testing.assert_array_equal(mean.invert_map(np.ones_like(mean.array)).array, 1.0)


@pytest.mark.parametrize(("shape", "dims"), [((8, 8), "2D"), ((8, 8, 8, 3), "4D")])
def test_wrong_dimensionality_is_named(shape, dims):
    volume = _volume(np.zeros(shape), np.eye(4), name="cases/odd.nii.gz")
    with pytest.raises(InputError, match=rf"odd\.nii\.gz: expected a 3D volume, got {dims}"):
        prepare(volume, _prep())


def test_nan_voxels_fail_or_are_filled():
    data = blob_volume()
    data[3, 4, 5] = np.nan
    with pytest.raises(
        InputError, match=r"case\.nii\.gz: 1 voxels are NaN.*preprocessing\.nan_fill"
    ):
        prepare(_volume(data), _prep())
    filled = prepare(_volume(data), _prep(nan_fill=-1.0))
    assert filled.array[0, 3, 4, 5] == -1.0


def _outside_by_brute_force(volume: Volume, prepared) -> float:
    """Every source voxel centre mapped into the model's grid, counted outside it."""
    index = np.indices(volume.spatial_shape).reshape(3, -1)
    world = volume.affine @ np.vstack([index, np.ones(index.shape[1])])
    grid = np.linalg.solve(prepared.affine, world)[:3]
    size = np.asarray(prepared.array.shape[1:])[:, None]
    inside = np.all((grid >= -0.5 - 1e-6) & (grid < size - 0.5 - 1e-6), axis=0)
    return 1.0 - float(inside.mean())


@pytest.mark.parametrize("axcodes", ["LPS", "SIL"])
@pytest.mark.parametrize(
    "steps",
    [ALL_STEPS, {"crop_pad": {"size": [20, 9, 30]}}, {"crop_pad": {"size": [40, 40, 40]}}],
)
def test_crop_pad_records_the_fraction_of_source_voxels_outside_the_model_grid(axcodes, steps):
    volume = _volume(blob_volume(), oblique_affine((1.5, 2.0, 3.0), axcodes))
    prepared = prepare(volume, _prep(**steps))
    record = prepared.sidecar_fields()[-1]
    expected = _outside_by_brute_force(volume, prepared)
    assert record["outside_field_of_view"] == pytest.approx(expected, abs=1e-6)
    # A map is zero exactly where the model saw nothing.
    back = prepared.invert_map(np.ones_like(prepared.array)).array
    if "resample" not in steps:
        assert float((back == 0).mean()) == pytest.approx(expected, abs=1e-6)


def test_sample_case03_loses_one_source_plane_on_two_axes():
    from pathlib import Path

    from xaimed.config import load_config
    from xaimed.io.nifti import read_nifti

    root = Path(__file__).resolve().parent.parent
    config = load_config(root / "configs" / "sample.yaml")
    volume = read_nifti(root / "sample_data" / "images" / "case03.nii.gz")
    prepared = prepare(volume, config.preprocessing, model_size=config.model.input_size)
    record = prepared.sidecar_fields()[-1]
    assert volume.spatial_shape == (56, 56, 38)
    assert record["offset"] == [-1, -1, 0]
    # One of 56 planes on each of the two in-plane axes; all 38 slices are seen.
    assert record["outside_field_of_view"] == pytest.approx(1 - (55 / 56) ** 2, abs=1e-6)
    assert record["outside_field_of_view"] == pytest.approx(
        _outside_by_brute_force(volume, prepared), abs=1e-6
    )
