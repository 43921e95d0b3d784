"""The PNG of a multi-sequence map is drawn over the sequence that mattered most, named in its
caption (the first sequence may not show what the map points at: the sample lesion is
invisible on T1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xaimed.volume import Source, Volume
from xaimed.writers.png import grey_channel, write_overlay_png


def _volume(array: np.ndarray) -> Volume:
    return Volume(
        array=array, affine=np.diag([2.0, 2.0, 3.0, 1.0]), source=Source(Path("x"), "nifti")
    )


def test_grey_image_is_the_channel_with_the_largest_part_of_the_map(tmp_path):
    rng = np.random.default_rng(0)
    source = _volume(rng.normal(size=(8, 7, 6, 3)).astype(np.float32))
    small, large = np.full((8, 7, 6), 0.1, np.float32), np.full((8, 7, 6), -2.0, np.float32)
    parts = {"t1": source.with_array(small), "t2": source.with_array(large),
             "flair": source.with_array(small)}  # fmt: skip
    grey, caption = grey_channel(source, parts)
    np.testing.assert_array_equal(grey.array, source.array[..., 1])
    assert caption == "t2, the channel with the largest share"
    # One channel: the source as it is, no caption.
    assert grey_channel(source, {}) == (source, "the first of 3 channels")  # a CAM: no parts
    single = _volume(source.array[..., 0])
    assert grey_channel(single, {}) == (single, None)
    heatmap = source.with_array(large + small)
    path = write_overlay_png(grey, heatmap, tmp_path / "m.png", title="m", grey=caption)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
