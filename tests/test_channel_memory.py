"""Memory held while a multi-sequence case is read: the stack and a channel or two, no more."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import yaml
from conftest import blob_volume, tiny_config, write_nifti

from xaimed.config import load_config
from xaimed.io.case import Case, ChannelFile
from xaimed.io.channels import _coverage
from xaimed.io.read import read_case
from xaimed.volume import Source, Volume


def _peak(call):
    """What ``call`` returns and the most memory numpy and Python held while it ran."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_channels_are_read_one_at_a_time_into_the_stack(tmp_path: Path) -> None:
    # Six 32^3 float32 channels, gzipped (nibabel would map an .nii file, untraced). Reading
    # every channel before stacking held them all beside the stack (about 12 channels); one at
    # a time holds the stack, the reference and what reading one more channel takes.
    shape, names = (32, 32, 32), ["t1", "t1ce", "t2", "flair", "dwi", "adc"]
    files = [
        write_nifti(
            tmp_path / f"{name}.nii.gz", blob_volume(shape, seed=n), np.eye(4), dtype=np.float32
        )
        for n, name in enumerate(names)
    ]
    model = {"torchscript": str(tmp_path / "m.pt"), "in_channels": 6}
    config_data = tiny_config(
        tmp_path / "w.pt", preprocessing={"channels": {"names": names}}, model=model
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config_data))
    config = load_config(tmp_path / "c.yaml", check_files=False)
    channels = tuple(ChannelFile(n, f) for n, f in zip(names, files, strict=True))
    case = Case("c1", files[0], format=None, channels=channels)
    alone, read_one = _peak(lambda: read_case(Case("x", files[0], format=None), config))
    volume, peak = _peak(lambda: read_case(case, config))
    one = alone.array.nbytes
    assert volume.array.shape == (*shape, 6)
    for index, path in enumerate(files):
        expected = np.asarray(read_case(Case("x", path, format=None), config).array)
        assert np.array_equal(volume.array[..., index], expected)
    limit = 6 * one + one + read_one + one // 2
    assert peak < limit, f"peak {peak / one:.2f} channels, limit {limit / one:.2f}"


def test_coverage_is_the_fraction_inside_with_memory_bounded_by_a_slice() -> None:
    source = Source(Path("x.nii"), "nifti")
    base = Volume(np.zeros((64, 64, 64), np.float32), np.eye(4), source)
    # Half of the reference's rows (0..31) lie inside a grid of 32 rows; a shift by 16 rows
    # leaves a quarter (48..63); one of -0.6 voxel puts row 31 outside (31.6 > 31 + 0.5).
    half = Volume(np.zeros((32, 64, 64), np.float32), np.eye(4), source)
    assert _coverage(half, base) == 0.5
    shifted = np.eye(4)
    shifted[0, 3] = 48.0
    assert _coverage(Volume(half.array, shifted, source), base) == 0.25
    shifted[0, 3] = -0.6
    assert _coverage(Volume(half.array, shifted, source), base) == 31 / 64
    inside, peak = _peak(lambda: _coverage(half, base))
    # All three coordinates of every voxel at once held 72 bytes a voxel (18 MiB here); a slice
    # at a time holds a few 64 x 64 planes.
    assert inside == 0.5 and peak < 64**3, f"peak {peak} bytes for {64**3} voxels"
