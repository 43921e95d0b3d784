"""Preprocessing with an exact inverse for maps.

Each configured step turns the source Volume into the model's input and records what it did;
:meth:`Prepared.invert_map` sends a map on the model's input grid back through the inverse of
every step, so that it is defined on the source grid voxel for voxel. Steps run in a fixed order:
channels, reorient, resample, intensity, crop/pad, resize (:mod:`xaimed.resize`). With no steps
the volume reaches the model as it is (float32, batch and channel axes added).

Grid steps keep an affine for the model's input grid, so the inverse can be checked: undoing
every step restores the source shape and affine exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import nibabel as nib
import numpy as np
from scipy import ndimage

from xaimed.config import (
    ChannelsStep,
    CropPadStep,
    IntensityStep,
    PreprocessingSection,
    ResampleStep,
)
from xaimed.errors import InputError
from xaimed.finite import require_finite_step
from xaimed.geometry import Geometry
from xaimed.resize import resize
from xaimed.volume import Volume


class Applied(Protocol):
    """A step that has been applied and knows how to undo itself on a map."""

    def sidecar_fields(self) -> dict[str, Any]: ...

    def invert(self, data: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class AppliedChannels:
    """Channels taken from the source, repeated; maps are combined back over channels."""

    params: ChannelsStep
    source_channels: int

    @property
    def names(self) -> tuple[str, ...]:
        """The source channels' names: the config's ``names``, else ``ch0``, ``ch1``..."""
        return self.params.names or tuple(f"ch{i}" for i in range(self.source_channels))

    def sidecar_fields(self) -> dict[str, Any]:
        return {
            "step": "channels",
            **self.params.model_dump(),
            "source_channels": self.source_channels,
        }

    def split(self, data: np.ndarray) -> np.ndarray:
        """Each source channel's part of the combined map, (source channels, I, J, K): the
        parts add up to :meth:`invert`'s map (``reduce_map: mean`` divides each by their count).
        """
        # data: (C, I, J, K). Repeated copies of one source channel are all the same voxel, so
        # by the chain rule the source voxel's attribution is their sum.
        per_source = data.reshape(self.source_channels, self.params.repeat, *data.shape[1:])
        per_source = per_source.sum(axis=1)
        if self.params.reduce_map == "mean":
            per_source = per_source / np.float32(self.source_channels)
        return per_source.astype(np.float32)

    def invert(self, data: np.ndarray) -> np.ndarray:
        # The parts added one after another, so that a user adding the per-channel files
        # gets this map bit for bit.
        parts = self.split(data)
        out = parts[0].copy()
        for part in parts[1:]:
            out += part
        return out


@dataclass(frozen=True)
class AppliedReorient:
    """Axes permuted and flipped to the requested orientation."""

    target: str
    transform: np.ndarray  # nibabel ornt transform from source to target orientation
    source_shape: tuple[int, int, int]
    source_axcodes: str

    def sidecar_fields(self) -> dict[str, Any]:
        return {"step": "reorient", "from": self.source_axcodes, "to": self.target}

    def invert(self, data: np.ndarray) -> np.ndarray:
        back = nib.orientations.ornt_transform(
            nib.orientations.axcodes2ornt(self.target),
            nib.orientations.axcodes2ornt(tuple(self.source_axcodes)),
        )
        return _apply_ornt(data, back)


@dataclass(frozen=True)
class AppliedResample:
    """Linear (or other order) resampling to a new spacing over the same field of view centre."""

    params: ResampleStep
    scale: np.ndarray  # new voxel size / old voxel size, per axis
    offset: np.ndarray  # old index of new voxel 0
    source_shape: tuple[int, int, int]
    shape: tuple[int, int, int]

    def sidecar_fields(self) -> dict[str, Any]:
        return {
            "step": "resample",
            "spacing": list(self.params.spacing),
            "order": self.params.order,
            "from_shape": list(self.source_shape),
            "to_shape": list(self.shape),
        }

    def invert(self, data: np.ndarray) -> np.ndarray:
        # Old index i sits at new index (i - offset) / scale; maps go back with linear
        # interpolation whatever the forward order, since attributions are continuous values.
        return np.stack(
            [
                ndimage.affine_transform(
                    c,
                    1.0 / self.scale,
                    offset=-self.offset / self.scale,
                    output_shape=self.source_shape,
                    order=1,
                    mode="nearest",
                )
                for c in data
            ]
        )


@dataclass(frozen=True)
class AppliedIntensity:
    """Intensity normalisation; moves no voxel, so its inverse leaves maps alone."""

    params: IntensityStep
    stats: dict[str, float] = field(default_factory=dict)

    def sidecar_fields(self) -> dict[str, Any]:
        relevant = {
            "window": ("level", "width", "clip"),
            "zscore": ("nonzero",),
            "percentile": ("low", "high", "clip"),
        }[self.params.kind]
        params = {k: getattr(self.params, k) for k in relevant}
        return {"step": "intensity", "kind": self.params.kind, **params, **self.stats}

    def invert(self, data: np.ndarray) -> np.ndarray:
        return data


@dataclass(frozen=True)
class AppliedCropPad:
    """Centre crop and pad; the inverse pads cropped regions with 0 and drops padding.

    ``outside_field_of_view`` is the fraction of the *source* voxels (the file as read, before
    any step) whose centres fall outside the model's input grid: the part of the image the
    model never sees, where every map is 0 by construction.
    """

    before: tuple[int, int, int]  # positive: voxels padded before; negative: cropped
    source_shape: tuple[int, int, int]
    shape: tuple[int, int, int]
    pad_value: float
    outside_field_of_view: float = 0.0

    def sidecar_fields(self) -> dict[str, Any]:
        return {
            "step": "crop_pad",
            "from_shape": list(self.source_shape),
            "to_shape": list(self.shape),
            "offset": list(self.before),
            "pad_value": self.pad_value,
            "outside_field_of_view": round(self.outside_field_of_view, 6),
        }

    def invert(self, data: np.ndarray) -> np.ndarray:
        return np.stack(
            [_crop_pad(c, [-b for b in self.before], self.source_shape, 0.0) for c in data]
        )


def _apply_ornt(data: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Apply a nibabel orientation transform to the spatial axes of (C, I, J, K) data."""
    return np.stack([nib.orientations.apply_orientation(c, ornt) for c in data])


def _crop_pad(
    data: np.ndarray, before: list[int] | tuple[int, ...], shape: tuple[int, ...], fill: float
) -> np.ndarray:
    """Place ``data`` into an array of ``shape`` shifted by ``before`` (negative crops)."""
    out = np.full(shape, fill, dtype=data.dtype)
    src, dst = [], []
    for b, n_in, n_out in zip(before, data.shape, shape, strict=True):
        lo_out, lo_in = max(b, 0), max(-b, 0)
        length = min(n_in - lo_in, n_out - lo_out)
        src.append(slice(lo_in, lo_in + length))
        dst.append(slice(lo_out, lo_out + length))
    out[tuple(dst)] = data[tuple(src)]
    return out


def outside_fraction(
    source_affine: np.ndarray,
    source_shape: tuple[int, ...],
    grid_affine: np.ndarray,
    grid_shape: tuple[int, ...],
) -> float:
    """Fraction of the source voxels whose centres lie outside the grid ``grid_shape``.

    Computed per axis: the steps before crop/pad only permute, flip and scale axes, so each axis
    of the grid depends on exactly one source axis, and the voxels inside are the product of the
    per-axis counts (exact, and cheap for any volume size).
    """
    to_grid = np.linalg.solve(grid_affine, source_affine)  # source index -> grid index
    inside = 1.0
    used: set[int] = set()
    for axis in range(3):
        row = to_grid[axis, :3]
        source_axis = int(np.argmax(np.abs(row)))
        if np.count_nonzero(np.abs(row) > 1e-6 * np.abs(row).max()) != 1 or source_axis in used:
            raise ValueError("crop/pad grid is not axis-aligned with the source grid")
        used.add(source_axis)
        centres = row[source_axis] * np.arange(source_shape[source_axis]) + to_grid[axis, 3]
        # A voxel centre exactly on the grid's edge is inside (half-open at the far side).
        seen = (centres >= -0.5 - 1e-6) & (centres < grid_shape[axis] - 0.5 - 1e-6)
        inside *= float(seen.mean())
    return 1.0 - inside


@dataclass
class Prepared:
    """The model's input and the record of how it was made from the source."""

    source: Volume
    array: np.ndarray  # (C, I, J, K) float32, the model's input without the batch axis
    affine: np.ndarray  # of the model's input grid, RAS+
    steps: list[Applied]

    @property
    def geometry(self) -> Geometry:
        """The model's input grid (spatial axes of ``array``, without channels)."""
        return Geometry.of(self.array.shape[1:], self.affine)

    def sidecar_fields(self) -> list[dict[str, Any]]:
        """What was done, for the sidecar."""
        return [step.sidecar_fields() for step in self.steps]

    def invert_map(self, data: np.ndarray) -> Volume:
        """A map on the model's input grid, (C, I, J, K), back on the source grid as a Volume.

        A map with one channel for a multi-channel input is spatial (a CAM) and is not combined
        over channels.
        """
        return self.invert_map_parts(data)[0]

    def invert_map_parts(self, data: np.ndarray) -> tuple[Volume, dict[str, np.ndarray]]:
        """:meth:`invert_map`, and each source channel's part of it by channel name (empty for
        a single-channel source or a spatial map): the parts add up to the map exactly."""
        spatial_only = data.shape[0] == 1 and self.array.shape[0] > 1
        if data.shape[1:] != self.array.shape[1:] or (
            data.shape[0] != self.array.shape[0] and not spatial_only
        ):
            raise ValueError(f"map shape {data.shape} differs from the input {self.array.shape}")
        out = np.asarray(data, dtype=np.float32)
        parts: dict[str, np.ndarray] = {}
        for step in reversed(self.steps):
            if isinstance(step, AppliedChannels):
                if spatial_only:
                    out = out[0]  # a spatial map (one channel) needs no combining over channels
                    continue
                if step.source_channels > 1:
                    parts = dict(zip(step.names, step.split(out), strict=True))
            out = step.invert(out)
        if out.ndim == 4:  # no channels step can have run; keep the contract explicit
            out = out[0]
        return self.source.with_array(out.astype(np.float32)), parts

    def forward_labels(self, labels: np.ndarray) -> np.ndarray:
        """A label map on the source grid, (I, J, K), on the model's grid by the same grid steps.

        Labels are integers, so resampling is nearest-neighbour whatever the image's order, and
        voxels padded in by crop/pad get label 0 (background).
        """
        if labels.shape != self.source.array.shape[:3]:
            raise ValueError(
                f"label map shape {labels.shape} differs from the source {self.source.array.shape}"
            )
        out = np.asarray(labels)[None]
        for step in self.steps:
            if isinstance(step, AppliedReorient):
                out = _apply_ornt(out, step.transform)
            elif isinstance(step, AppliedResample):
                out = np.stack(
                    [
                        ndimage.affine_transform(
                            c, step.scale, offset=step.offset, output_shape=step.shape,
                            order=0, mode="nearest",
                        )
                        for c in out
                    ]
                )  # fmt: skip
            elif isinstance(step, AppliedCropPad):
                out = np.stack([_crop_pad(c, step.before, step.shape, 0) for c in out])
            elif hasattr(step, "forward_labels"):  # steps of model formats (xaimed.models)
                out = step.forward_labels(out)
        return np.ascontiguousarray(out[0])


def _channels(volume: Volume, params: ChannelsStep) -> tuple[np.ndarray, AppliedChannels]:
    data = volume.array
    name = volume.source.path
    if params.source == "single":
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim == 4 and volume.is_2d:
            raise InputError(
                f"{name}: the 2D image has {data.shape[3]} values per pixel (shape "
                f"{data.shape[:2]} x {data.shape[3]}, e.g. RGB), where one was expected; set "
                "preprocessing.channels.source: last_axis if the model takes them as channels."
            )
        if data.ndim != 3:
            raise InputError(
                f"{name}: expected a 3D volume, got {data.ndim}D of shape {data.shape}; set "
                "preprocessing.channels.source: last_axis if the 4th axis holds channels."
            )
        stack = data[None]
    else:
        # 'columns': the channel files were stacked on axis 3 when the case was read.
        if data.ndim != 4:
            raise InputError(
                f"{name}: preprocessing.channels.source is last_axis, which needs a 4D volume, "
                f"got shape {data.shape}."
            )
        if params.names is not None and data.shape[3] != len(params.names):
            raise InputError(
                f"{name}: the 4th axis holds {data.shape[3]} channel(s) but "
                f"preprocessing.channels.names gives {len(params.names)}; name each channel."
            )
        stack = np.moveaxis(data, 3, 0)
    repeated = np.repeat(stack, params.repeat, axis=0)
    return repeated, AppliedChannels(params, stack.shape[0])


def _reorient(
    data: np.ndarray, affine: np.ndarray, target: str
) -> tuple[np.ndarray, np.ndarray, AppliedReorient]:
    shape = data.shape[1:]
    source = "".join(nib.aff2axcodes(affine))
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(tuple(target))
    )
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, shape)
    return (
        _apply_ornt(data, transform),
        new_affine,
        AppliedReorient(target, transform, shape, source),
    )


def _resample(
    data: np.ndarray, affine: np.ndarray, params: ResampleStep
) -> tuple[np.ndarray, np.ndarray, AppliedResample]:
    shape = np.array(data.shape[1:])
    spacing = np.asarray(Geometry.of(data.shape[1:], affine).spacing)
    scale = np.asarray(params.spacing, dtype=np.float64) / spacing
    new_shape = np.maximum(1, np.round(shape / scale)).astype(int)
    # Keep the grid centre where it was: old index of new voxel j is offset + j * scale.
    offset = (shape - 1) / 2 - (new_shape - 1) / 2 * scale
    out = np.stack(
        [
            ndimage.affine_transform(
                c,
                scale,
                offset=offset,
                output_shape=tuple(new_shape),
                order=params.order,
                mode="nearest",
            )
            for c in data
        ]
    ).astype(np.float32)
    step = np.eye(4)
    step[:3, :3] = np.diag(scale)
    step[:3, 3] = offset
    applied = AppliedResample(
        params, scale, offset, tuple(int(n) for n in shape), tuple(int(n) for n in new_shape)
    )
    return out, affine @ step, applied


def _intensity(data: np.ndarray, params: IntensityStep) -> tuple[np.ndarray, AppliedIntensity]:
    out = np.empty_like(data, dtype=np.float32)
    stats: dict[str, Any] = {}
    for c, channel in enumerate(data):
        if params.kind == "window":
            if params.level is None or params.width is None:
                raise RuntimeError("window without level and width passed config validation")
            lo, hi = params.level - params.width / 2, params.level + params.width / 2
        elif params.kind == "percentile":
            lo, hi = (float(v) for v in np.percentile(channel, [params.low, params.high]))
        # Statistics and scaling in float64: float32 overflows on voxels near 1e20 (the square
        # in the standard deviation) and on spans between values near its 3.4e38 limit.
        if params.kind == "zscore":
            values = channel[channel != 0] if params.nonzero else channel
            if values.size == 0:
                values = channel
            mean, std = float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))
            std = std if std > 0 else 1.0
            out[c] = (channel.astype(np.float64) - mean) / std
            stats.setdefault("mean", []).append(mean)
            stats.setdefault("std", []).append(std)
            continue
        span = hi - lo if hi > lo else 1.0
        scaled = (channel.astype(np.float64) - lo) / span
        out[c] = np.clip(scaled, 0.0, 1.0) if params.clip else scaled
        stats.setdefault("range", []).append([float(lo), float(hi)])
    return out, AppliedIntensity(params, stats)


def _crop_pad_step(
    data: np.ndarray,
    affine: np.ndarray,
    params: CropPadStep,
    model_size: tuple[int, int, int] | None,
) -> tuple[np.ndarray, np.ndarray, AppliedCropPad]:
    size = model_size if params.size == "model" else params.size
    if size is None:  # the config validator requires model.input_size for 'model'
        raise RuntimeError("crop_pad.size 'model' without model.input_size passed validation")
    shape = tuple(int(n) for n in data.shape[1:])
    before = tuple((t - n) // 2 for n, t in zip(shape, size, strict=True))
    fill = float(data.min()) if params.pad_value == "min" else float(params.pad_value)
    out = np.stack([_crop_pad(c, before, tuple(size), fill) for c in data])
    shift = np.eye(4)
    shift[:3, 3] = [-b for b in before]
    applied = AppliedCropPad(before, shape, tuple(size), fill)  # type: ignore[arg-type]
    return out, affine @ shift, applied


def prepare(
    volume: Volume,
    config: PreprocessingSection,
    *,
    model_size: tuple[int, int, int] | None = None,
) -> Prepared:
    """Turn a source Volume into the model's input, recording every step for the inverse."""
    data, channels = _channels(volume, config.channels)
    bad = ~np.isfinite(data)
    if bad.any():
        if config.nan_fill is None:
            raise InputError(
                f"{volume.source.path}: {int(bad.sum())} voxels are NaN or infinite; fix the "
                "image or set preprocessing.nan_fill to a value to replace them with."
            )
        data = np.where(bad, np.float32(config.nan_fill), data)
    data = data.astype(np.float32, copy=False)
    affine = volume.affine
    steps: list[Applied] = [channels]
    where = str(volume.source.path)
    if config.reorient is not None:
        data, affine, applied = _reorient(data, affine, config.reorient)
        steps.append(applied)
    if config.resample is not None:
        data, affine, applied_r = _resample(data, affine, config.resample)
        steps.append(applied_r)
        require_finite_step(data, where=where, step="resample")
    if config.intensity is not None:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
            data, applied_i = _intensity(data, config.intensity)
        steps.append(applied_i)
        require_finite_step(data, where=where, step="intensity")
        stats = np.asarray(_flat_stats(applied_i.stats), dtype=np.float64)
        require_finite_step(stats, where=where, step="intensity")
    if config.crop_pad is not None:
        data, affine, applied_c = _crop_pad_step(data, affine, config.crop_pad, model_size)
        outside = outside_fraction(volume.affine, volume.array.shape[:3], affine, applied_c.shape)
        steps.append(replace(applied_c, outside_field_of_view=outside))
        require_finite_step(data, where=where, step="crop_pad")
    if config.resize is not None:  # fixed-size models (xaimed.resize)
        size = model_size if config.resize.size == "model" else config.resize.size
        if size is None:  # the config validator requires model.input_size for 'model'
            raise RuntimeError("preprocessing.resize.size 'model' without model.input_size")
        data, affine, applied_z = resize(data, affine, config.resize, size)
        steps.append(applied_z)
        require_finite_step(data, where=where, step="resize")
    return Prepared(volume, np.ascontiguousarray(data, dtype=np.float32), affine, steps)


def _flat_stats(stats: dict[str, Any]) -> list[float]:
    """Every number in an intensity step's statistics (mean, std, ranges), for the finite check."""
    return [float(v) for values in stats.values() for v in np.ravel(values)]
