"""Deterministic head-like 3D phantoms, with or without a hyperintense lesion.

The anatomy is defined analytically (and, for the textures, on a fixed world-space lattice) in
world millimetres with the head centred on the world origin. It is then *sampled* onto whatever
voxel grid is requested. Because of that, one seed describes one subject: asking for the same
seed on a different grid shape, spacing or orientation gives the same head, just digitised
differently. That is what lets the sample study exercise reorientation and resampling code with
a known ground truth.

The same seed with ``lesion=True`` and ``lesion=False`` also gives the same anatomy; the lesion
is drawn in both cases and only painted in when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = [
    "SEQUENCES",
    "T1",
    "Contrast",
    "Phantom",
    "grid_affine",
    "make_phantom",
    "make_sequences",
    "mask_to_nifti",
    "phantom_to_nifti",
    "voxel_world_coordinates",
]

# Which world axis (0 = x, 1 = y, 2 = z of RAS+) a nibabel axis code refers to, and the sign of
# the direction it points to in RAS+ space.
_AXIS_CODES: dict[str, tuple[int, float]] = {
    "R": (0, 1.0),
    "L": (0, -1.0),
    "A": (1, 1.0),
    "P": (1, -1.0),
    "S": (2, 1.0),
    "I": (2, -1.0),
}

# Textures live on a fixed world lattice rather than on the output grid, so they do not change
# when the grid does. 3 mm is fine enough for the smallest texture scale used below and covers
# every field of view the sample study uses (largest half-extent is about 98 mm).
_LATTICE_STEP_MM = 3.0
_LATTICE_HALF_EXTENT_MM = 108.0


@dataclass(frozen=True)
class Contrast:
    """Tissue intensities of one MR sequence; ``lesion`` None leaves the lesion invisible."""

    scalp: float
    skull: float
    csf: float
    grey: float
    white: float
    lesion: float | None


# T1-like tissue intensities (fat-containing scalp bright, bone and CSF dark, white matter
# brighter than grey matter). The lesion is well above anything in healthy tissue even after the
# bias field, which keeps the classification task learnable by a tiny network.
T1 = Contrast(scalp=560.0, skull=120.0, csf=190.0, grey=470.0, white=700.0, lesion=1000.0)

# The four sequences of a brain-tumour study, as the multi-sequence sample case has them: an
# enhancing lesion that native T1 does not show, bright after contrast (T1ce), bright on FLAIR
# (dark CSF) and moderately bright on T2 (where CSF is brighter still).
SEQUENCES: dict[str, Contrast] = {
    "t1": Contrast(scalp=560.0, skull=120.0, csf=190.0, grey=470.0, white=700.0, lesion=None),
    "t1ce": T1,
    "t2": Contrast(scalp=300.0, skull=60.0, csf=950.0, grey=620.0, white=460.0, lesion=780.0),
    "flair": Contrast(scalp=420.0, skull=60.0, csf=120.0, grey=560.0, white=420.0, lesion=1000.0),
}

_NOISE_SIGMA = 12.0
# Width of the partial-volume transition at tissue boundaries; soft edges keep the phantom from
# aliasing differently on different grids.
_EDGE_MM = 0.8


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic head volume on a voxel grid.

    Attributes:
        image: float32 array of T1-like intensities (roughly 0..1000), indexed like the grid.
        mask: uint8 array, 1 for voxels whose centre lies inside the lesion, all zero otherwise.
        affine: 4x4 float64 voxel-index -> RAS+ world (mm) matrix, nibabel convention.
    """

    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True, eq=False)
class _Ellipsoid:
    centre: np.ndarray  # (3,) world mm
    semi_axes: np.ndarray  # (3,) mm, along the local axes
    rotation: np.ndarray  # (3, 3): rows are the local axes expressed in world coordinates

    def rho(self, points: np.ndarray) -> np.ndarray:
        """Normalised ellipsoidal radius of (3, N) world points: <= 1 inside."""
        scaled = self._local(points) / self._axes(points.dtype)
        return np.sqrt(np.sum(scaled**2, axis=0))

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Approximate signed distance (mm, negative inside) of (3, N) world points.

        Uses the first-order estimate ``k0 (k0 - 1) / k1``; it is exact on the surface and good
        enough a few centimetres inside, which is all the nested head shells need.
        """
        axes = self._axes(points.dtype)
        scaled = self._local(points) / axes
        k0 = np.sqrt(np.sum(scaled**2, axis=0))
        k1 = np.sqrt(np.sum((scaled / axes) ** 2, axis=0))
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)

    def _local(self, points: np.ndarray) -> np.ndarray:
        # Cast the parameters to the points' dtype so float32 grids stay float32 throughout.
        rotation = self.rotation.astype(points.dtype)
        return _matvec(rotation, points - self.centre.astype(points.dtype)[:, None])

    def _axes(self, dtype: np.dtype) -> np.ndarray:
        return self.semi_axes.astype(dtype)[:, None]


@dataclass(frozen=True, eq=False)
class _Anatomy:
    head: _Ellipsoid
    scalp_mm: float
    skull_mm: float
    csf_mm: float
    cortex_mm: float
    fold_mm: float
    ventricles: tuple[_Ellipsoid, _Ellipsoid]
    lesion: _Ellipsoid
    bias_linear: np.ndarray  # (3,)
    bias_quadratic: np.ndarray  # (3,)
    fold_field: np.ndarray  # lattice, unit std
    texture_field: np.ndarray  # lattice, unit std

    @property
    def brain_depth_mm(self) -> float:
        """Depth of the brain surface below the head surface."""
        return self.scalp_mm + self.skull_mm + self.csf_mm


def grid_affine(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    axcodes: str,
) -> np.ndarray:
    """Voxel -> RAS+ world affine of a grid whose centre sits at world (0, 0, 0).

    Args:
        shape: number of voxels along each array axis.
        spacing: voxel size in mm along each array axis.
        axcodes: three nibabel axis codes (e.g. ``"RAS"``, ``"LPS"``) giving the world direction
            each array axis increases towards.

    Returns:
        4x4 float64 affine with a signed permutation of the spacings as its 3x3 part.
    """
    codes = _parse_axcodes(axcodes)
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError(f"shape and spacing need 3 entries, got {shape!r} and {spacing!r}")
    if any(s <= 0 for s in shape) or any(v <= 0 for v in spacing):
        raise ValueError(f"shape and spacing must be positive, got {shape!r} and {spacing!r}")
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for array_axis, (world_axis, sign) in enumerate(codes):
        affine[world_axis, array_axis] = sign * float(spacing[array_axis])
    centre_index = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    affine[:3, 3] = -affine[:3, :3] @ centre_index
    return affine


def voxel_world_coordinates(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """RAS+ world coordinates (mm) of every voxel centre, as a (3, prod(shape)) array in C order.

    float32: sub-micrometre precision over a head-sized field of view, at half the cost.
    """
    index = np.indices(shape, dtype=np.float32).reshape(3, -1)
    return _matvec(affine[:3, :3].astype(np.float32), index) + affine[:3, 3:4].astype(np.float32)


def make_phantom(
    seed: int,
    *,
    shape: tuple[int, int, int] = (48, 48, 48),
    spacing: tuple[float, float, float] = (4.0, 4.0, 4.0),
    axcodes: str = "RAS",
    lesion: bool,
    contrast: Contrast = T1,
) -> Phantom:
    """Generate a head-like T1 phantom for ``seed`` sampled on the requested grid.

    ``contrast`` gives other tissue intensities (another MR sequence of the same subject, see
    :data:`SEQUENCES`); the anatomy, lesion and noise stay those of ``seed``.

    The subject (head shape, shells, grey/white-matter pattern, ventricles, bias field and the
    lesion's location) depends on ``seed`` only; the grid only decides where it is sampled. The
    acquisition noise is drawn last, per voxel, so it is the one thing that differs between grids.

    Args:
        seed: seed for ``np.random.default_rng``; one seed is one subject.
        shape: grid shape (voxels per array axis).
        spacing: voxel size in mm per array axis.
        axcodes: nibabel orientation code of the array axes, e.g. ``"RAS"``, ``"LPS"``, ``"LAS"``.
        lesion: paint the hyperintense lesion (and fill ``mask``) when true.

    Returns:
        The phantom: float32 image, uint8 lesion mask and its voxel -> RAS+ affine.
    """
    affine = grid_affine(shape, spacing, axcodes)
    rng = np.random.default_rng(seed)
    anatomy = _draw_anatomy(rng)
    points = voxel_world_coordinates(shape, affine)

    clean, lesion_rho = _render(anatomy, points, lesion=lesion, contrast=contrast)
    # Rician magnitude noise: the background becomes Rayleigh-distributed like a real magnitude
    # image instead of symmetric noise around zero.
    real = clean + _NOISE_SIGMA * rng.standard_normal(clean.shape)
    imag = _NOISE_SIGMA * rng.standard_normal(clean.shape)
    image = np.hypot(real, imag).astype(np.float32).reshape(shape)

    if lesion:
        mask = (lesion_rho <= 1.0).astype(np.uint8).reshape(shape)
    else:
        mask = np.zeros(shape, dtype=np.uint8)
    return Phantom(image=image, mask=mask, affine=affine)


def make_sequences(
    seed: int,
    *,
    shape: tuple[int, int, int] = (48, 48, 48),
    spacing: tuple[float, float, float] = (4.0, 4.0, 4.0),
    axcodes: str = "RAS",
    lesion: bool,
    sequences: tuple[str, ...] = tuple(SEQUENCES),
) -> dict[str, Phantom]:
    """One subject (``seed``) imaged with each of ``sequences`` (names in :data:`SEQUENCES`) on
    one grid: same anatomy and lesion, each sequence's own contrast and noise.

    The anatomy is drawn once and each sequence's noise follows it in the order given, so the
    result depends on ``seed`` and ``sequences`` only.
    """
    affine = grid_affine(shape, spacing, axcodes)
    rng = np.random.default_rng(seed)
    anatomy = _draw_anatomy(rng)
    points = voxel_world_coordinates(shape, affine)
    out = {}
    for name in sequences:
        clean, lesion_rho = _render(anatomy, points, lesion=lesion, contrast=SEQUENCES[name])
        real = clean + _NOISE_SIGMA * rng.standard_normal(clean.shape)
        imag = _NOISE_SIGMA * rng.standard_normal(clean.shape)
        image = np.hypot(real, imag).astype(np.float32).reshape(shape)
        mask = (lesion_rho <= 1.0) if lesion else np.zeros(lesion_rho.shape, dtype=bool)
        out[name] = Phantom(image=image, mask=mask.astype(np.uint8).reshape(shape), affine=affine)
    return out


def phantom_to_nifti(ph: Phantom) -> nib.Nifti1Image:
    """The phantom image as an int16 NIfTI with sform and qform both set to the affine (code 1)."""
    data = np.clip(np.rint(ph.image), np.iinfo(np.int16).min, np.iinfo(np.int16).max)
    return _to_nifti(data.astype(np.int16), ph.affine)


def mask_to_nifti(ph: Phantom) -> nib.Nifti1Image:
    """The lesion mask as a uint8 NIfTI with sform and qform both set to the affine (code 1)."""
    return _to_nifti(ph.mask.astype(np.uint8), ph.affine)


def _to_nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return img


def _parse_axcodes(axcodes: str) -> list[tuple[int, float]]:
    codes = axcodes.upper()
    if len(codes) != 3 or any(c not in _AXIS_CODES for c in codes):
        raise ValueError(f"axcodes must be three of R/L/A/P/S/I, got {axcodes!r}")
    parsed = [_AXIS_CODES[c] for c in codes]
    if len({world_axis for world_axis, _ in parsed}) != 3:
        raise ValueError(f"axcodes must name each world axis once, got {axcodes!r}")
    return parsed


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    # The order of draws below is part of the phantom's definition: changing it changes every
    # subject. Nothing here may depend on the grid.
    head_centre = rng.uniform(-3.0, 3.0, size=3)
    head_axes = np.array([70.0, 85.0, 65.0]) * rng.uniform(0.95, 1.05, size=3)
    head = _Ellipsoid(head_centre, head_axes, _yaw(rng.uniform(-0.05, 0.05)))

    scalp_mm = rng.uniform(4.0, 6.0)
    skull_mm = rng.uniform(5.0, 7.0)
    csf_mm = rng.uniform(2.0, 3.5)
    cortex_mm = rng.uniform(3.5, 4.5)
    fold_mm = rng.uniform(3.0, 4.5)

    ventricles = _draw_ventricles(rng, head)
    bias_linear = rng.uniform(-0.04, 0.04, size=3)
    bias_quadratic = rng.uniform(-0.03, 0.03, size=3)
    fold_field = _lattice_noise(rng, sigma_mm=6.0)
    texture_field = _lattice_noise(rng, sigma_mm=3.0)

    partial = _Anatomy(
        head=head,
        scalp_mm=scalp_mm,
        skull_mm=skull_mm,
        csf_mm=csf_mm,
        cortex_mm=cortex_mm,
        fold_mm=fold_mm,
        ventricles=ventricles,
        lesion=head,  # replaced just below, once the shells it must avoid are known
        bias_linear=bias_linear,
        bias_quadratic=bias_quadratic,
        fold_field=fold_field,
        texture_field=texture_field,
    )
    # Always drawn, even for healthy phantoms, so the lesion flag never changes the anatomy.
    lesion = _draw_lesion(rng, partial)
    return replace(partial, lesion=lesion)


def _draw_ventricles(rng: np.random.Generator, head: _Ellipsoid) -> tuple[_Ellipsoid, _Ellipsoid]:
    offset = rng.uniform(6.0, 9.0)
    forward = rng.uniform(2.0, 8.0)
    up = rng.uniform(8.0, 14.0)
    axes = np.array([rng.uniform(4.0, 6.0), rng.uniform(18.0, 24.0), rng.uniform(7.0, 10.0)])
    # The frontal horns splay outwards, so each ventricle is yawed away from the midline.
    splay = rng.uniform(0.05, 0.2)
    left = _Ellipsoid(head.centre + np.array([-offset, forward, up]), axes, _yaw(-splay))
    right = _Ellipsoid(head.centre + np.array([offset, forward, up]), axes, _yaw(splay))
    return left, right


def _draw_lesion(rng: np.random.Generator, anatomy: _Anatomy) -> _Ellipsoid:
    radius = rng.uniform(9.0, 13.0)
    semi_axes = np.clip(radius * rng.uniform(0.88, 1.12, size=3), 8.0, 14.0)
    rotation = _random_rotation(rng)
    # Keep a few mm of parenchyma between the lesion and the cortex surface / ventricles so the
    # blob is unambiguously "in the brain" and never touches CSF or bone.
    clearance = float(semi_axes.max()) + 3.0
    brain_axes = anatomy.head.semi_axes - anatomy.brain_depth_mm
    dilated = [
        _Ellipsoid(v.centre, v.semi_axes + clearance, v.rotation) for v in anatomy.ventricles
    ]
    for _ in range(10_000):
        centre = anatomy.head.centre + rng.uniform(-0.8, 0.8, size=3) * brain_axes
        point = centre[:, None]
        depth_ok = anatomy.head.signed_distance(point)[0] <= -(anatomy.brain_depth_mm + clearance)
        if depth_ok and all(v.rho(point)[0] > 1.0 for v in dilated):
            return _Ellipsoid(centre, semi_axes, rotation)
    raise RuntimeError("could not place a lesion inside the brain parenchyma")


def _render(
    anatomy: _Anatomy, points: np.ndarray, *, lesion: bool, contrast: Contrast
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free intensities at (3, N) world points, and the lesion's normalised radius there."""
    sd = anatomy.head.signed_distance(points)
    lattice_index = (points + _LATTICE_HALF_EXTENT_MM) / _LATTICE_STEP_MM
    fold = _sample_lattice(anatomy.fold_field, lattice_index)
    texture = _sample_lattice(anatomy.texture_field, lattice_index)

    # Grey matter forms a ribbon under the brain surface whose thickness wobbles with the fold
    # field, which gives a gyri-like grey/white boundary without modelling real sulci.
    depth_in_brain = -(sd + anatomy.brain_depth_mm)
    white_fraction = _sigmoid((depth_in_brain - anatomy.cortex_mm + anatomy.fold_mm * fold) / 1.5)
    brain = contrast.grey + (contrast.white - contrast.grey) * white_fraction
    brain = brain * (1.0 + 0.035 * texture)

    image = np.zeros(points.shape[1])
    image = _blend(image, contrast.scalp * (1.0 + 0.04 * texture), _inside(sd))
    image = _blend(image, contrast.skull, _inside(sd + anatomy.scalp_mm))
    image = _blend(image, contrast.csf, _inside(sd + anatomy.scalp_mm + anatomy.skull_mm))
    image = _blend(image, brain, _inside(sd + anatomy.brain_depth_mm))
    for ventricle in anatomy.ventricles:
        image = _blend(image, contrast.csf, _inside(ventricle.signed_distance(points)))

    lesion_rho = anatomy.lesion.rho(points)
    if lesion and contrast.lesion is not None:
        # Soft edge: about 1.5 mm from 12% to 88% so the blob looks like oedema fading out
        # rather than a pasted sphere, while the mask keeps the crisp rho <= 1 definition.
        mean_radius = float(anatomy.lesion.semi_axes.mean())
        weight = _sigmoid((1.0 - lesion_rho) * mean_radius / 0.75)
        image = _blend(image, contrast.lesion * (1.0 + 0.03 * texture), weight)

    return image * _bias_field(anatomy, points), lesion_rho


def _bias_field(anatomy: _Anatomy, points: np.ndarray) -> np.ndarray:
    # Low-order polynomial in head-relative coordinates (units of 100 mm): a smooth receive-coil
    # shading of up to about +-8 %. It is kept mild on purpose: with a stronger field, bright
    # white matter on one side and a dim lesion on the other overlap in intensity, and the tiny
    # sample network then needs far more training to tell them apart.
    rel = (points - anatomy.head.centre.astype(points.dtype)[:, None]) / 100.0
    linear = anatomy.bias_linear.astype(points.dtype)
    quadratic = anatomy.bias_quadratic.astype(points.dtype)
    field = 1.0 + _matvec(linear[None, :], rel)[0] + _matvec(quadratic[None, :], rel**2)[0]
    return np.clip(field, 0.9, 1.1)


def _lattice_noise(rng: np.random.Generator, *, sigma_mm: float) -> np.ndarray:
    size = round(2.0 * _LATTICE_HALF_EXTENT_MM / _LATTICE_STEP_MM) + 1
    noise = rng.standard_normal((size, size, size), dtype=np.float32)
    smooth = ndimage.gaussian_filter(noise, sigma_mm / _LATTICE_STEP_MM, mode="wrap")
    return smooth / smooth.std()


def _sample_lattice(field: np.ndarray, lattice_index: np.ndarray) -> np.ndarray:
    return ndimage.map_coordinates(field, lattice_index, order=1, mode="nearest", prefilter=False)


def _matvec(matrix: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``matrix @ vectors`` for a (k, 3) matrix and (3, N) vectors, without BLAS.

    A 3-term sum is as fast as BLAS here, and BLAS would start its own thread pool, which
    oversubscribes the CPU when phantoms are generated in parallel processes.
    """
    return matrix[:, 0:1] * vectors[0] + matrix[:, 1:2] * vectors[1] + matrix[:, 2:3] * vectors[2]


def _inside(signed_distance: np.ndarray) -> np.ndarray:
    return _sigmoid(-signed_distance / _EDGE_MM)


def _blend(base: np.ndarray, value: np.ndarray | float, weight: np.ndarray) -> np.ndarray:
    return base + weight * (value - base)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form avoids overflow warnings from exp() far from the boundary.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _yaw(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    # Fixing the signs makes the distribution uniform and the result a proper rotation.
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q
