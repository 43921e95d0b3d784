"""The fixed-size preprocessing step: resample the whole volume to the shape a model takes.

Many models resize every input to one shape whatever its size (a brain-extraction network that
takes 128³, MONAI's ``Resized``). The resize is torch's ``F.interpolate`` with the mode the model
was trained with (``nearest``, ``linear`` = trilinear, ``area``), voxel centres aligned
(``align_corners=False``: new voxel j sits at old index (j + 0.5) * scale - 0.5), which is also
MONAI's ``Resized`` convention. That mapping is symmetric, so a map goes back to the source grid
by the same kind of resize in the other direction: the field of view is preserved exactly, and
the source shape and affine are restored (linear interpolation of the map values, as for
``resample``, since attributions are continuous).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xaimed.config import ResizeStep

MODES = {"nearest": "nearest", "linear": "trilinear", "area": "area"}


def _interpolate(data: np.ndarray, shape: tuple[int, ...], mode: str) -> np.ndarray:
    import torch  # here, not at import: `xaimed validate` imports this module and stays fast
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None]
    extra = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(tensor, size=shape, mode=mode, **extra)[0].numpy()


@dataclass(frozen=True)
class AppliedResize:
    """The volume resized to a fixed shape; maps are resized back to the source shape."""

    params: ResizeStep
    source_shape: tuple[int, int, int]
    size: tuple[int, int, int]

    def sidecar_fields(self) -> dict[str, Any]:
        return {
            "step": "resize",
            "mode": self.params.mode,
            "from_shape": list(self.source_shape),
            "to_shape": list(self.size),
        }

    def invert(self, data: np.ndarray) -> np.ndarray:
        return _interpolate(data, self.source_shape, "trilinear")

    def forward_labels(self, labels: np.ndarray) -> np.ndarray:
        """(1, I, J, K) labels -> the model grid, nearest neighbour."""
        return _interpolate(labels.astype(np.float32), self.size, "nearest").round()


def resize(
    data: np.ndarray, affine: np.ndarray, params: ResizeStep, size: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, AppliedResize]:
    """(C, I, J, K) -> (C, *size), with the affine of the new grid."""
    shape = tuple(int(n) for n in data.shape[1:])
    out = _interpolate(data, size, MODES[params.mode])
    scale = np.asarray(shape, dtype=np.float64) / np.asarray(size, dtype=np.float64)
    step = np.eye(4)
    step[:3, :3] = np.diag(scale)
    step[:3, 3] = 0.5 * scale - 0.5
    return out, affine @ step, AppliedResize(params, shape, size)  # type: ignore[arg-type]
