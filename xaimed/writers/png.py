"""A picture to look at: three orthogonal planes through the strongest attribution in the body.

Planes are shown in the closest RAS orientation with physical aspect ratios, in radiological
convention (the patient's right on the viewer's left, as ITK-SNAP and most PACS viewers show it).
The grey window and the planes come from the anatomy (see :mod:`xaimed.writers.display`): the
window from the body's intensities, so a lesion brighter than the tissue around it stays
visible; the planes through the strongest (lightly smoothed) attribution inside the body. Plane
numbers are voxel indices of the source file (i, j, k as stored), whatever its orientation, so
they can be typed into a viewer. A signed map uses a diverging colour map centred at zero, a
non-negative one a sequential map. Voxels below 10 % of the largest magnitude stay transparent
so the anatomy shows through. A 2D image (a radiograph) is one plane, shown in one panel the
same way (a coronal radiograph: the patient's right on the viewer's left, head up).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on clusters; must precede pyplot

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np

from xaimed.geometry import Geometry
from xaimed.volume import Volume
from xaimed.writers.atomic import atomic_path
from xaimed.writers.base import MapOutput
from xaimed.writers.display import display_window, focus_voxel, foreground_mask

TRANSPARENT_BELOW = 0.1
_SOURCE_AXES = "ijk"


def _to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
    ornt = nib.orientations.io_orientation(affine)
    out = nib.orientations.apply_orientation(data, ornt)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, data.shape[:3])
    return out, Geometry.of(out.shape, new_affine).spacing


def source_plane(affine: np.ndarray, shape: tuple[int, ...], ras_axis: int, index: int) -> str:
    """The source-file name of the plane at ``index`` along RAS axis ``ras_axis``, e.g. ``j=19``."""
    ornt = nib.orientations.io_orientation(affine)
    axis = int(np.flatnonzero(ornt[:, 0] == ras_axis)[0])
    flipped = ornt[axis, 1] < 0
    return f"{_SOURCE_AXES[axis]}={shape[axis] - 1 - index if flipped else index}"


def write_overlay_png(
    base: Volume, heatmap: Volume, path: Path, *, title: str, grey: str | None = None
) -> Path:
    """Write the three-plane overlay of ``heatmap`` on ``base`` (same grid) to ``path``;
    ``grey`` names what the grey image is when that needs saying (one channel of several)."""
    source = base.array if base.array.ndim == 3 else base.array[..., 0]
    image, spacing = _to_ras(np.asarray(source, dtype=np.float32), base.affine)
    values, _ = _to_ras(np.asarray(heatmap.array, dtype=np.float32), heatmap.affine)
    magnitude = float(np.nanmax(np.abs(values))) if values.size else 0.0
    body = foreground_mask(image)
    focus = focus_voxel(values, body)
    signed = bool(np.nanmin(values) < 0)
    cmap, vmin, vmax = ("RdBu_r", -magnitude, magnitude) if signed else ("inferno", 0, magnitude)
    vmax = vmax if vmax > vmin else vmin + 1e-12
    shown = np.ma.masked_where(np.abs(values) < TRANSPARENT_BELOW * magnitude, values)
    lo, hi = display_window(image, body)
    i, j, k = focus
    sx, sy, sz = spacing
    shape = source.shape[:3]

    def where(axis: int, index: int) -> str:
        return source_plane(base.affine, shape, axis, index)

    planes = [
        ("axial", image[:, :, k], shown[:, :, k], sy / sx, ("R", "L"), where(2, k)),
        ("coronal", image[:, j, :], shown[:, j, :], sz / sx, ("R", "L"), where(1, j)),
        ("sagittal", image[i, :, :], shown[i, :, :], sz / sy, ("P", "A"), where(0, i)),
    ]
    if base.is_2d:
        # One plane: the RAS axis of depth 1 (the plane's normal) says which view it is.
        flat = [n for n, size in enumerate(image.shape) if size == 1]
        planes = [planes[2 - (flat[-1] if flat else 2)]]
        planes = [(*planes[0][:5], "2D image")]
    fig, axes = plt.subplots(
        1, len(planes), figsize=(11, 4.6) if len(planes) == 3 else (8, 7.4),
        layout="constrained", squeeze=False,
    )  # fmt: skip
    axes = axes[0]
    mappable = None
    for ax, (name, img, ov, aspect, sides, plane) in zip(axes, planes, strict=True):
        ax.imshow(img.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect)
        mappable = ax.imshow(
            ov.T,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            origin="lower",
            aspect=aspect,
            alpha=0.6,
            interpolation="nearest",
        )
        if name != "sagittal":
            ax.invert_xaxis()  # radiological: patient's right on the viewer's left
        ax.set_title(f"{name} ({plane})" if base.is_2d else f"{name} (source {plane})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.01, 0.5, sides[0], transform=ax.transAxes, color="yellow", va="center")
        ax.text(0.97, 0.5, sides[1], transform=ax.transAxes, color="yellow", va="center")
    bar = fig.colorbar(mappable, ax=axes, orientation="horizontal", fraction=0.05, shrink=0.6)
    bar.set_label("attribution (signed)" if signed else "attribution")
    # A caption wider than the figure is cut at both ends: break it (about 12 characters of
    # 10-point text per inch).
    fig.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * 12)), fontsize=10)
    # Below the colour bar, where constrained layout leaves room for it.
    where_text = (
        f"the whole 2D image (stored {base.axcodes[:2]})"
        if base.is_2d
        else "planes through the strongest attribution in the body; i, j, k: voxel indices of "
        f"the source file (stored {base.axcodes})"
    )
    grey_text = f"grey: {grey}, window" if grey else "grey window"
    fig.supxlabel(f"{where_text}; {grey_text} {lo:.4g} to {hi:.4g}", fontsize=7, color="dimgray")
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
        """``<stem>.png``, captioned with ``out.title``; a multi-channel source shows the
        channel with the largest share of the attribution, named below the picture."""
        source, grey = grey_channel(out.source, out.channel_maps)
        path = write_overlay_png(source, out.heatmap, out.case_dir / f"{out.stem}.png",
                                 title=out.title, grey=grey)  # fmt: skip
        return {"png": str(path)}


def grey_channel(source: Volume, channel_maps: dict[str, Volume]) -> tuple[Volume, str | None]:
    """The image to draw a map over, and what to call it: for a source of several channels (T1,
    T1ce, T2, FLAIR) with their parts of the map, the channel whose part is largest (the
    manifest's ``top_channel``), as what a map points at is often invisible on the first one
    (a lesion on T1); without parts, the first channel; one channel: ``source`` itself and
    None."""
    data = source.array
    names = list(channel_maps)
    if data.ndim == 4 and data.shape[3] > 1 and len(names) != data.shape[3]:
        # A map without parts (the CAM family: one map for all channels): the first channel.
        return source, f"the first of {data.shape[3]} channels"
    if data.ndim != 4 or len(names) < 2:
        return source, None
    totals = [float(np.abs(np.asarray(channel_maps[n].array)).sum()) for n in names]
    index = int(np.argmax(totals))
    caption = f"{names[index]}, the channel with the largest share"
    return source.with_array(np.asarray(data[..., index])), caption
