"""A picture to look at: three orthogonal planes through the strongest attribution.

Planes are shown in the closest RAS orientation with physical aspect ratios, in radiological
convention (the patient's right on the viewer's left, as ITK-SNAP and most PACS viewers show it).
The base image is windowed at its 1st–99th percentiles; a signed map uses a diverging colour map
centred at zero, a non-negative one a sequential map. Voxels below 10 % of the largest magnitude
stay transparent so the anatomy shows through.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on clusters; must precede pyplot

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np

from xaimed.volume import Volume
from xaimed.writers.atomic import atomic_path
from xaimed.writers.base import MapOutput

TRANSPARENT_BELOW = 0.1


def _to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ornt = nib.orientations.io_orientation(affine)
    out = nib.orientations.apply_orientation(data, ornt)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, data.shape[:3])
    return out, np.linalg.norm(new_affine[:3, :3], axis=0)


def _window(base: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(base, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def write_overlay_png(base: Volume, heatmap: Volume, path: Path, *, title: str) -> Path:
    """Write the three-plane overlay of ``heatmap`` on ``base`` (same grid) to ``path``."""
    image = base.array if base.array.ndim == 3 else base.array[..., 0]
    image, spacing = _to_ras(np.asarray(image, dtype=np.float32), base.affine)
    values, _ = _to_ras(np.asarray(heatmap.array, dtype=np.float32), heatmap.affine)
    magnitude = float(np.nanmax(np.abs(values))) if values.size else 0.0
    peak = np.unravel_index(int(np.nanargmax(np.abs(values))), values.shape)
    signed = bool(np.nanmin(values) < 0)
    cmap, vmin, vmax = ("RdBu_r", -magnitude, magnitude) if signed else ("inferno", 0, magnitude)
    vmax = vmax if vmax > vmin else vmin + 1e-12
    shown = np.ma.masked_where(np.abs(values) < TRANSPARENT_BELOW * magnitude, values)
    lo, hi = _window(image)
    i, j, k = peak
    sx, sy, sz = spacing
    planes = [
        ("axial", image[:, :, k], shown[:, :, k], sy / sx, ("R", "L"), f"z={k}"),
        ("coronal", image[:, j, :], shown[:, j, :], sz / sx, ("R", "L"), f"y={j}"),
        ("sagittal", image[i, :, :], shown[i, :, :], sz / sy, ("P", "A"), f"x={i}"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(11, 4.4), layout="constrained")
    mappable = None
    for ax, (name, img, ov, aspect, sides, where) in zip(axes, planes, strict=True):
        ax.imshow(img.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect)
        mappable = ax.imshow(
            ov.T,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            origin="lower",
            aspect=aspect,
            alpha=0.75,
            interpolation="nearest",
        )
        if name != "sagittal":
            ax.invert_xaxis()  # radiological: patient's right on the viewer's left
        ax.set_title(f"{name} ({where})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.01, 0.5, sides[0], transform=ax.transAxes, color="yellow", va="center")
        ax.text(0.97, 0.5, sides[1], transform=ax.transAxes, color="yellow", va="center")
    bar = fig.colorbar(mappable, ax=axes, orientation="horizontal", fraction=0.05, shrink=0.6)
    bar.set_label("attribution (signed)" if signed else "attribution")
    fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


class PngWriter:
    """A PNG overlay of the map on the source image (``outputs.png``)."""

    name = "png"
    columns = ("png",)

    def wanted(self, out: MapOutput) -> bool:
        """When ``outputs.png`` is on."""
        return out.outputs.png

    def write(self, out: MapOutput) -> dict[str, str]:
        """``<stem>.png``, captioned with ``out.title``."""
        path = write_overlay_png(out.source, out.heatmap, out.case_dir / f"{out.stem}.png",
                                 title=out.title)  # fmt: skip
        return {"png": str(path)}
