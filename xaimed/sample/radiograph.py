"""A deterministic chest-radiograph-like 2D phantom (PA view), with or without a lung nodule.

The anatomy is drawn analytically in image-plane millimetres (the centre of the detector at the
origin) and then sampled on the requested pixel grid, so one seed is one subject whatever the
grid: body outline, two lungs, heart and mediastinum, spine, clavicles, rib-like bands across
the lungs and, when asked, a round nodule inside one lung (its mask is the "lesion").

Values are detector-like units in 0..4095 (12 bits) where a higher value means more attenuation,
i.e. brighter in the usual radiograph display (DICOM MONOCHROME2 sense; a MONOCHROME1 file
stores ``4095 - image``).

The array is ``(rows, columns)`` as a PA chest film is viewed: row 0 at the top (superior), rows
going towards the feet, column 0 on the viewer's left, which is the patient's right.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    import nibabel as nib

__all__ = ["MAX_VALUE", "radiograph_affine", "radiograph_nifti", "radiograph_phantom"]

MAX_VALUE = 4095.0

# Attenuation-like levels (arbitrary detector units). The nodule adds on top of lung, so it is
# conspicuous but not brighter than bone: the tiny sample network must look at shape and place,
# not only at the brightest pixels.
_AIR = 150.0
_SOFT_TISSUE = 1900.0
_LUNG = 650.0
_HEART = 2500.0
_SPINE = 3100.0
_RIB = 650.0  # added
_CLAVICLE = 900.0  # added
_NODULE = 1000.0  # added
_NOISE_SIGMA = 35.0
# Soft edges (mm): the phantom then samples alike on different grids.
_EDGE_MM = 1.5
# Focal-spot / detector blur (mm).
_BLUR_MM = 0.8


@dataclass(frozen=True)
class _Ellipse:
    cx: float
    cy: float
    ax: float
    ay: float

    def rho(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Normalised elliptical radius of points (u, v): <= 1 inside."""
        return np.hypot((u - self.cx) / self.ax, (v - self.cy) / self.ay)

    def inside(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Soft indicator (0..1) of the inside, with an edge about ``_EDGE_MM`` wide."""
        mean_axis = 0.5 * (self.ax + self.ay)
        return _sigmoid((1.0 - self.rho(u, v)) * mean_axis / _EDGE_MM)


@dataclass(frozen=True)
class _Chest:
    body: _Ellipse
    lungs: tuple[_Ellipse, _Ellipse]
    heart: _Ellipse
    spine_half_width: float
    rib_start: float
    rib_step: float
    rib_slope: float
    rib_half_width: float
    clavicle_level: float
    nodule: _Ellipse
    gain: float


def radiograph_phantom(
    seed: int = 0,
    *,
    shape: tuple[int, int] = (128, 128),
    pixel_spacing: tuple[float, float] = (2.8, 2.8),
    lesion: bool = True,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """A PA chest-radiograph-like image for ``seed`` sampled on a ``shape`` pixel grid.

    The subject (body size, lungs, heart, ribs and the nodule's place and size) depends on
    ``seed`` only; the same seed with and without ``lesion`` is the same chest, the nodule painted
    in or not. Detector noise is drawn last, per pixel.

    Args:
        seed: seed for ``np.random.default_rng``; one seed is one subject.
        shape: ``(rows, columns)``; the field of view is ``shape * pixel_spacing`` mm, centred.
        pixel_spacing: ``(row spacing, column spacing)`` in mm, DICOM PixelSpacing's order.
        lesion: paint the nodule (and fill the mask) when true.

    Returns:
        ``(image, mask, pixel_spacing)``: float32 ``(rows, columns)`` image in 0..4095
        (higher = more attenuation), uint8 mask (1 inside the nodule, all 0 without a lesion)
        and the pixel spacing given, as floats.
    """
    if len(shape) != 2 or any(int(n) <= 0 for n in shape):
        raise ValueError(f"shape must be two positive sizes, got {shape!r}")
    if len(pixel_spacing) != 2 or any(float(s) <= 0 for s in pixel_spacing):
        raise ValueError(f"pixel_spacing must be two positive sizes, got {pixel_spacing!r}")
    rows, cols = int(shape[0]), int(shape[1])
    row_mm, col_mm = float(pixel_spacing[0]), float(pixel_spacing[1])
    rng = np.random.default_rng(seed)
    chest = _draw_chest(rng)
    # u: mm towards the viewer's right (patient's left); v: mm towards the feet.
    v = (np.arange(rows, dtype=np.float64) - (rows - 1) / 2.0)[:, None] * row_mm
    u = (np.arange(cols, dtype=np.float64) - (cols - 1) / 2.0)[None, :] * col_mm
    u, v = np.broadcast_arrays(u, v)

    image = _render(chest, u, v, lesion=lesion)
    sigma_px = (_BLUR_MM / row_mm, _BLUR_MM / col_mm)
    image = ndimage.gaussian_filter(image, sigma_px, mode="nearest")
    image = image + _NOISE_SIGMA * rng.standard_normal(image.shape)
    image = np.clip(image, 0.0, MAX_VALUE).astype(np.float32)
    if lesion:
        mask = (chest.nodule.rho(u, v) <= 1.0).astype(np.uint8)
    else:
        mask = np.zeros((rows, cols), dtype=np.uint8)
    return image, mask, (row_mm, col_mm)


def radiograph_affine(shape: tuple[int, int], pixel_spacing: tuple[float, float]) -> np.ndarray:
    """Voxel -> RAS+ affine of a PA radiograph stored as a 2D NIfTI of shape (columns, rows).

    NIfTI axis i runs along a row (the film's columns: towards the patient's left, -x), axis j
    down the film (towards the feet, -z); the third column is the plane's unit normal
    (towards posterior), xaimed's convention for 2D images. The centre of the film is the world
    origin.
    """
    rows, cols = shape
    row_mm, col_mm = pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = [-col_mm, 0.0, 0.0]
    affine[:3, 1] = [0.0, 0.0, -row_mm]
    affine[:3, 2] = np.cross(affine[:3, 0], affine[:3, 1]) / (col_mm * row_mm)
    affine[:3, 3] = -affine[:3, :2] @ np.array([(cols - 1) / 2.0, (rows - 1) / 2.0])
    return affine


def radiograph_nifti(
    array: np.ndarray, pixel_spacing: tuple[float, float], dtype: type = np.int16
) -> nib.Nifti1Image:
    """A ``(rows, columns)`` film (image or mask) as a 2D NIfTI, sform and qform code 1."""
    import nibabel as nib

    affine = radiograph_affine(array.shape, pixel_spacing)  # type: ignore[arg-type]
    data = np.rint(array.T) if np.issubdtype(dtype, np.integer) else array.T
    img = nib.Nifti1Image(np.ascontiguousarray(data).astype(dtype), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return img


def _draw_chest(rng: np.random.Generator) -> _Chest:
    # The order of the draws is part of the phantom's definition: changing it changes every
    # subject. Nothing here depends on the grid.
    scale = rng.uniform(0.94, 1.06)
    shift = rng.uniform(-6.0, 6.0, size=2)
    body = _Ellipse(shift[0], 20.0 + shift[1], 165.0 * scale, 200.0 * scale)
    right = _Ellipse(
        -68.0 * scale + shift[0],
        -15.0 + shift[1],
        rng.uniform(48.0, 56.0) * scale,
        rng.uniform(100.0, 112.0) * scale,
    )
    left = _Ellipse(
        68.0 * scale + shift[0],
        -10.0 + shift[1],
        rng.uniform(45.0, 53.0) * scale,
        rng.uniform(95.0, 108.0) * scale,
    )
    heart = _Ellipse(
        rng.uniform(12.0, 28.0) + shift[0],
        rng.uniform(45.0, 60.0) + shift[1],
        rng.uniform(52.0, 62.0) * scale,
        rng.uniform(45.0, 55.0) * scale,
    )
    chest = _Chest(
        body=body,
        lungs=(right, left),
        heart=heart,
        spine_half_width=rng.uniform(16.0, 20.0) * scale,
        rib_start=rng.uniform(-120.0, -105.0) + shift[1],
        rib_step=rng.uniform(22.0, 26.0) * scale,
        rib_slope=rng.uniform(0.004, 0.006),
        rib_half_width=rng.uniform(4.5, 6.0),
        clavicle_level=rng.uniform(-128.0, -118.0) + shift[1],
        nodule=body,  # replaced below, once the lungs it must sit in are known
        gain=rng.uniform(0.95, 1.05),
    )
    # Always drawn, so the lesion flag never changes the anatomy.
    return replace(chest, nodule=_draw_nodule(rng, chest))


def _draw_nodule(rng: np.random.Generator, chest: _Chest) -> _Ellipse:
    radius = rng.uniform(8.0, 12.0)
    lung = chest.lungs[int(rng.integers(2))]
    # Keep the whole nodule inside the lung and off the heart, with a few mm to spare.
    for _ in range(10_000):
        cx = lung.cx + rng.uniform(-0.75, 0.75) * lung.ax
        cy = lung.cy + rng.uniform(-0.75, 0.75) * lung.ay
        point_u, point_v = np.array([cx]), np.array([cy])
        shrunk = _Ellipse(lung.cx, lung.cy, lung.ax - radius - 4.0, lung.ay - radius - 4.0)
        grown = _Ellipse(
            chest.heart.cx, chest.heart.cy, chest.heart.ax + radius + 4.0, chest.heart.ay + radius
        )
        if shrunk.rho(point_u, point_v)[0] <= 1.0 and grown.rho(point_u, point_v)[0] > 1.0:
            return _Ellipse(cx, cy, radius, radius * rng.uniform(0.9, 1.1))
    raise RuntimeError("could not place a nodule inside a lung")


def _render(chest: _Chest, u: np.ndarray, v: np.ndarray, *, lesion: bool) -> np.ndarray:
    image = np.full(u.shape, _AIR)
    image = _blend(image, _SOFT_TISSUE, chest.body.inside(u, v))
    lungs = np.maximum(chest.lungs[0].inside(u, v), chest.lungs[1].inside(u, v))
    image = _blend(image, _LUNG, lungs)
    image = _blend(image, _HEART, chest.heart.inside(u, v))
    spine = _sigmoid((chest.spine_half_width - np.abs(u - chest.body.cx)) / _EDGE_MM)
    image = _blend(image, _SPINE, spine * chest.body.inside(u, v))

    # Posterior ribs: bands that sag laterally, from the spine out to the chest wall.
    lateral = np.abs(u - chest.body.cx) - chest.spine_half_width
    reach = _sigmoid(lateral / _EDGE_MM) * chest.body.inside(u, v)
    ribs = np.zeros(u.shape)
    sag = chest.rib_slope * np.maximum(lateral, 0.0) ** 2
    for k in range(10):
        centre = chest.rib_start + k * chest.rib_step + sag
        band = _sigmoid((chest.rib_half_width - np.abs(v - centre)) / (0.5 * _EDGE_MM))
        ribs = np.maximum(ribs, band)
    image = image + _RIB * ribs * reach
    # Clavicles: two near-horizontal bands rising laterally.
    clavicle_centre = chest.clavicle_level - 0.12 * np.abs(u - chest.body.cx)
    clavicle = _sigmoid((6.0 - np.abs(v - clavicle_centre)) / (0.5 * _EDGE_MM))
    clavicle = clavicle * _sigmoid((120.0 - np.abs(u - chest.body.cx)) / _EDGE_MM) * reach
    image = image + _CLAVICLE * clavicle

    if lesion:
        image = image + _NODULE * chest.nodule.inside(u, v)
    return image * chest.gain


def _blend(base: np.ndarray, value: np.ndarray | float, weight: np.ndarray) -> np.ndarray:
    return base + weight * (value - base)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form avoids overflow warnings from exp() far from the boundary.
    return 0.5 * (1.0 + np.tanh(0.5 * x))
