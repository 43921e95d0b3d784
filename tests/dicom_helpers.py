"""Helpers shared by the DICOM tests: where the data are, world-space comparison, dciodvfy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
from conftest import ROOT, blob_volume, oblique_affine

from xaimed.io.dicom.export import export_series
from xaimed.volume import Source, Volume

DATA = ROOT / "tests" / "data" / "dicom"
# Real scanner series (dicom2nifti's test data, MIT), copied into the repository by
# scripts/copy_vendor_test_data.py so that every test runs on a fresh clone.
VENDOR = DATA / "vendor"
DCIODVFY = shutil.which("dciodvfy") or str(Path(ROOT / ".venv" / "bin" / "dciodvfy"))


def gt_array(path: Path) -> np.ndarray:
    """A reference NIfTI's voxels as float64; RGB NIfTIs become a trailing channel axis."""
    data = np.asarray(nib.load(str(path)).dataobj)
    if data.dtype.names:
        data = np.stack([data[c] for c in "RGB"], axis=-1)
    return data.astype(np.float64)


def assert_same_in_world(volume: Volume, reference: Path, *, atol: float = 1e-4) -> None:
    """``volume`` equals the NIfTI ``reference`` in world space (voxel order may differ)."""
    img = nib.load(str(reference))
    ref = gt_array(reference)
    if ref.ndim == 4 and ref.shape[3] == 1 and volume.array.ndim == 3:
        ref = ref[..., 0]
    index_map = np.linalg.inv(img.affine) @ volume.affine
    perm, shift = np.round(index_map[:3, :3]), np.round(index_map[:3, 3])
    assert np.allclose(index_map[:3, :3], perm, atol=1e-3), index_map
    assert np.allclose(index_map[:3, 3], shift, atol=1e-2), index_map
    idx = np.indices(volume.spatial_shape).reshape(3, -1)
    ref_idx = (perm @ idx + shift[:, None]).astype(int)
    assert ref_idx.min() >= 0 and all(ref_idx[a].max() < ref.shape[a] for a in range(3))
    mine = volume.array.reshape(idx.shape[1], *volume.array.shape[3:])
    np.testing.assert_allclose(mine, ref[ref_idx[0], ref_idx[1], ref_idx[2]], atol=atol)


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy prints for one DICOM file."""
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [
        line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")
    ]


def blob_source(shape=(20, 18, 12), spacing=(1.5, 2.0, 3.0), axcodes="LPS", seed=0) -> Volume:
    """A Volume with structure, anisotropic spacing and an oblique affine (integer values)."""
    data = np.round(blob_volume(shape, tuple(n // 2 for n in shape), seed=seed))
    affine = oblique_affine(spacing, axcodes)
    return Volume(data.astype(np.float32), affine, Source(Path("blob"), "test"))


def write_study(folder: Path, *, seed: str = "study-a", **kwargs) -> tuple[Volume, list[Path]]:
    """Export a blob volume as a classic DICOM series; returns the volume and the files."""
    volume = blob_source(
        **{k: kwargs.pop(k) for k in ("shape", "spacing", "axcodes") if k in kwargs}
    )
    kwargs.setdefault("patient_id", "PID-SECRET-42")
    kwargs.setdefault("patient_name", "Doe^Jane")
    return volume, export_series(volume, folder, uid_seed=seed, **kwargs)
