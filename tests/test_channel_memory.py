"""Memory held while a multi-sequence case is read: the stack and a channel or two, no more."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import yaml
from conftest import blob_volume, tiny_config, write_nifti

from xaimed.config import load_config
from xaimed.io.case import Case, ChannelFile
from xaimed.io.read import read_case


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
