"""Read a multi-sequence case: one file per channel (T1, T1ce, T2, FLAIR...), stacked on axis 3.

Each channel's file is read by the reader of its format (:mod:`xaimed.io.readers`), so a channel
may be any format a case-list path may be. The channels must share one grid (checked with
:meth:`xaimed.geometry.Geometry.same_grid`) unless ``preprocessing.channels.resample_to`` names
the channel whose grid the others are resampled onto (linear interpolation, 0 outside a file's
field of view). The stacked Volume keeps the reference channel's source (header, path), so maps
are written on that channel's grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from scipy import ndimage

from xaimed.config import Config
from xaimed.errors import InputError
from xaimed.io.case import Case, ChannelFile
from xaimed.io.safety import check_stacked_size
from xaimed.volume import Volume


def read_channels(case: Case, config: Config, read_one: Callable[[Case], Volume]) -> Volume:
    """The channels of ``case`` stacked in the config's order: a Volume of shape (I, J, K, C).

    ``read_one`` reads a single-file case (:func:`xaimed.io.read.read_case`). Raises
    InputError naming the case and channel when a file cannot be read, is not 3D, is 2D while
    the reference is 3D (or the reverse), or lies on another grid than the reference channel
    while ``resample_to`` is unset, and naming the case when all channels stacked need more
    memory than the budget.
    """
    wanted = config.preprocessing.channels.resample_to
    reference = wanted if wanted is not None else case.channels[0].name
    by_name = {channel.name: channel for channel in case.channels}
    # The reference channel first: its grid fixes the stacked size, which is checked before
    # the other channels are read (each reader checks its own file's size alone).
    base = _read_channel(case, by_name[reference], read_one)
    check_stacked_size(
        (*base.spatial_shape, len(case.channels)), f"case {case.case_id}",
        config.runtime.memory_budget_bytes, held=base.array.nbytes,
    )  # fmt: skip
    # Filled channel by channel, each read only once the one before it is copied in and
    # dropped: the case holds the stack and the reference (what check_stacked_size weighed)
    # and one other channel at most, not every channel and their stack side by side.
    stacked = np.empty((*base.spatial_shape, len(case.channels)), dtype=np.float32)
    records = []
    for index, channel in enumerate(case.channels):
        volume = base if channel.name == reference else _read_channel(case, channel, read_one)
        record = {"name": channel.name, "path": str(channel.path), "resampled_from": None}
        if volume.is_2d != base.is_2d:
            # Resampling would put a plane into one slice of a volume and zeros everywhere else.
            kinds = {True: "a 2D image", False: "a 3D volume"}
            raise InputError(
                f"case {case.case_id}: channel {channel.name} ({channel.path}) is "
                f"{kinds[volume.is_2d]} {volume.spatial_shape} but {reference} is "
                f"{kinds[base.is_2d]} {base.spatial_shape}; give every channel of a case as 2D "
                "images or every one as 3D volumes."
            )
        if not base.geometry.same_grid(volume.geometry):
            if wanted is None:
                raise InputError(
                    f"case {case.case_id}: channel {channel.name} ({channel.path}) is on another "
                    f"grid than {reference}: {_difference(base, volume)}; set "
                    f"preprocessing.channels.resample_to: {reference} or give files on one grid."
                )
            record["resampled_from"] = volume.geometry.describe()
            inside = _coverage(volume, base)
            if inside == 0.0:
                # Resampling would give a channel of zeros: the files are not of one patient
                # position (another study, a wrong header), not a grid to interpolate.
                raise InputError(
                    f"case {case.case_id}: channel {channel.name} ({channel.path}) does not "
                    f"overlap {reference}'s field of view at all ({volume.geometry.describe()} "
                    f"against {base.geometry.describe()}); check that the files belong together "
                    "and their headers' positions."
                )
            record["inside_field_of_view"] = round(inside, 4)
            volume = base.with_array(_resample_onto(volume, base))
        stacked[..., index] = volume.array
        records.append(record)
        del volume  # before the next channel is read
    return base.with_array(stacked, channels=records)


def _read_channel(case: Case, channel: ChannelFile, read_one: Callable[[Case], Volume]) -> Volume:
    # A missing or unreadable file's message names the case and that file.
    volume = read_one(replace(case, path=channel.path, channels=(), format=None))
    return _three_d(volume, case, channel)


def _three_d(volume: Volume, case: Case, channel: ChannelFile) -> Volume:
    data = volume.array
    if data.ndim == 4 and data.shape[3] == 1:
        return volume.with_array(data[..., 0])
    if data.ndim != 3:
        raise InputError(
            f"case {case.case_id}: channel {channel.name} ({channel.path}) has shape "
            f"{data.shape}; each channel column must name one 3D image."
        )
    return volume


def _difference(base: Volume, other: Volume) -> str:
    """How two grids differ, in words: shapes, or how far apart their affines are."""
    if base.spatial_shape != other.spatial_shape:
        return f"shape {base.spatial_shape} against {other.spatial_shape}"
    gap = float(np.max(np.abs(base.affine - other.affine)))
    return (
        f"same shape {base.spatial_shape} but affines differ by up to {gap:.3g} mm "
        f"({base.geometry.describe()} against {other.geometry.describe()})"
    )


def _coverage(volume: Volume, base: Volume) -> float:
    """The fraction of ``base``'s voxel centres that lie inside ``volume``'s grid."""
    index_map = np.linalg.solve(volume.affine, base.affine)
    rows, cols, slices = base.spatial_shape
    i = np.arange(rows, dtype=np.float64)[:, None]
    j = np.arange(cols, dtype=np.float64)[None, :]
    upper = np.asarray(volume.spatial_shape, dtype=np.float64) - 1
    # One reference slice at a time, one axis of ``volume`` at a time: a few (rows, cols)
    # planes alive at once, not every voxel's three coordinates (72 bytes a voxel, GBs for a
    # CT) to compute a single fraction.
    inside = 0
    for k in range(slices):
        mask = np.ones((rows, cols), dtype=bool)
        for axis in range(3):
            m = index_map[axis]
            where = m[0] * i + m[1] * j + (m[2] * k + m[3])
            mask &= (where >= -0.5) & (where <= upper[axis] + 0.5)
        inside += int(np.count_nonzero(mask))
    return inside / (rows * cols * slices)


def _resample_onto(volume: Volume, base: Volume) -> np.ndarray:
    """``volume``'s voxels sampled at ``base``'s voxel centres (linear; 0 outside its field)."""
    # Reference voxel index -> world -> this volume's voxel index: one affine map, which is
    # what ndimage.affine_transform takes (scipy does the interpolation).
    index_map = np.linalg.solve(volume.affine, base.affine)
    return ndimage.affine_transform(
        np.asarray(volume.array, dtype=np.float32),
        index_map[:3, :3],
        offset=index_map[:3, 3],
        output_shape=base.spatial_shape,
        order=1,
        mode="constant",
        cval=0.0,
    ).astype(np.float32, copy=False)  # already float32 (the input is): no second copy
