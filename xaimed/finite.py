"""Checks that a case's arithmetic stayed meaningful, so garbage is never marked ``ok``.

Extreme voxel values (3e38, 1e20) overflow float32 in statistics, interpolation or the model,
and a grid far coarser than the model's can leave no source voxel inside the model's field of
view. Each check fails the case with one sentence that names the step where it went wrong.
"""

from __future__ import annotations

import numpy as np
import torch

from xaimed.errors import InputError


def _count_bad(values: np.ndarray | torch.Tensor) -> int:
    if isinstance(values, torch.Tensor):
        return int((~torch.isfinite(values)).sum())
    return int((~np.isfinite(values)).sum())


def require_finite_step(values: np.ndarray, *, where: str, step: str) -> None:
    """Raise InputError when preprocessing step ``step`` produced NaN or infinite values."""
    bad = _count_bad(values)
    if bad:
        raise InputError(
            f"{where}: preprocessing step {step!r} produced {bad} NaN or infinite values (the "
            "image's intensities overflow 32-bit floats there); check the image's values and "
            f"preprocessing.{step}."
        )


def require_finite_output(outputs: torch.Tensor, inputs: torch.Tensor, *, where: str) -> None:
    """Raise InputError when the model's output for the prediction is NaN or infinite."""
    bad = _count_bad(outputs)
    if bad:
        low, high = float(inputs.min()), float(inputs.max())
        raise InputError(
            f"{where}: the model's output has {bad} NaN or infinite values on this input (values "
            f"from {low:.3g} to {high:.3g} after preprocessing); normalise the intensities "
            "(preprocessing.intensity) or check the image."
        )


def require_map_on_source(model_map: np.ndarray, source_map: np.ndarray, *, where: str) -> None:
    """Raise InputError when a map that is not zero on the model's grid is all zero on the
    source grid: no source voxel lies inside the model's field of view (e.g. 400 mm slices
    resampled to 4 mm and cropped to the model's size keep none of the source planes)."""
    if np.any(model_map) and not np.any(source_map):
        raise InputError(
            f"{where}: the map is zero on every voxel of the source image: after resampling and "
            "cropping no source voxel lies inside the model's field of view (check the image's "
            "voxel spacing against preprocessing.resample and crop_pad)."
        )
