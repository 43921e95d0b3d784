"""Feature groupings for perturbation methods: which voxels are removed together.

A grouping assigns every voxel of the model's input grid a group id in ``0 .. G-1``; all
channels of a voxel share its group. Three kinds: a regular grid of blocks, 3D supervoxels
(SLIC on the image, spacing-aware), and a label map given as a NIfTI on the source grid (an
atlas, an organ segmentation), brought onto the model's grid with nearest-neighbour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from xaimed.errors import MethodError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from xaimed.methods.context import MethodContext

Size = (
    Annotated[int, Field(ge=1)]
    | tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]
    # Two numbers: a 2D model's box (X, Y); the config refuses them for 3D models at load.
    | tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]
)


class _Grouping(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GridGrouping(_Grouping):
    """Blocks of ``size`` voxels (one number or one per axis), clipped at the border."""

    kind: Literal["grid"] = "grid"
    size: Size = 8


class SlicGrouping(_Grouping):
    """SLIC supervoxels on the (min-max scaled) image, with the model grid's spacing."""

    kind: Literal["slic"]
    segments: Annotated[int, Field(ge=2)] = 100
    compactness: Annotated[float, Field(gt=0)] = 0.1


class LabelMapGrouping(_Grouping):
    """One group per label of a NIfTI label map on the source grid (``{case_id}`` filled in)."""

    kind: Literal["labels"]
    path: str


GroupingSpec = Annotated[
    GridGrouping | SlicGrouping | LabelMapGrouping, Field(discriminator="kind")
]


def per_axis(value: int | tuple[int, ...], name: str) -> tuple[int, int, int]:
    """One number for every axis, or one per axis (two for a 2D model's plane: depth 1)."""
    if isinstance(value, int):
        return (value, value, value)
    if len(value) == 2:
        return (int(value[0]), int(value[1]), 1)
    if len(value) != 3:
        raise MethodError(f"{name} needs one number, two (2D) or three, got {list(value)}.")
    return (int(value[0]), int(value[1]), int(value[2]))


def grid_labels(shape: tuple[int, int, int], size: tuple[int, int, int]) -> np.ndarray:
    """Block ids over ``shape``, in C order of the blocks."""
    import numpy as np

    idx = [np.arange(n) // s for n, s in zip(shape, size, strict=True)]
    counts = [int(i[-1]) + 1 for i in idx]
    return (
        idx[0][:, None, None] * counts[1] * counts[2]
        + idx[1][None, :, None] * counts[2]
        + idx[2][None, None, :]
    ).astype(np.int64)


def slic_labels(
    image: np.ndarray, segments: int, compactness: float, spacing: tuple[float, float, float]
) -> np.ndarray:
    """SLIC supervoxels of a (C, I, J, K) image; each channel is scaled to [0, 1] first."""
    import numpy as np
    from skimage.segmentation import slic

    scaled = []
    for channel in image:
        lo, hi = float(channel.min()), float(channel.max())
        scaled.append((channel - lo) / (hi - lo) if hi > lo else np.zeros_like(channel))
    stack = np.stack(scaled, axis=-1).astype(np.float64)
    return slic(
        stack,
        n_segments=segments,
        compactness=compactness,
        spacing=np.asarray(spacing, dtype=np.float64),
        channel_axis=-1,
        start_label=0,
        enforce_connectivity=True,
    ).astype(np.int64)


def contiguous(labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Relabel to ``0 .. G-1`` (sorted by the original value); returns the original values."""
    import numpy as np

    values, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int64), [int(v) for v in values]


def make_groups(spec: GroupingSpec, ctx: MethodContext) -> tuple[torch.Tensor, dict[str, Any]]:
    """Group ids on the model's grid, (I, J, K) long on the input's device, and their record."""
    import torch

    shape = tuple(int(n) for n in ctx.inputs.shape[2:])
    record: dict[str, Any] = spec.model_dump()
    if isinstance(spec, GridGrouping):
        labels = grid_labels(shape, per_axis(spec.size, "grouping.size"))  # type: ignore[arg-type]
    elif isinstance(spec, SlicGrouping):
        spacing = ctx.case.spacing_mm if ctx.case is not None else (1.0, 1.0, 1.0)
        image = ctx.inputs[0].detach().float().cpu().numpy()
        labels, _ = contiguous(slic_labels(image, spec.segments, spec.compactness, spacing))
        record["spacing_mm"] = list(spacing)
    else:
        if ctx.case is None:
            raise MethodError("a label-map grouping needs a case (run it through xaimed explain).")
        labels, values = contiguous(ctx.case.labels(spec.path, "grouping.path"))
        record["path"] = str(ctx.case.path(spec.path, "grouping.path"))
        record["label_values"] = values
    record["groups"] = int(labels.max()) + 1
    return torch.from_numpy(labels).to(ctx.inputs.device), record
