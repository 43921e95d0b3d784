"""Shared fixtures: tiny volumes with awkward geometry, tiny models, configs that use them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

TESTS = Path(__file__).parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

from tiny_models import TinyCNN  # noqa: E402


def run_method(
    name: str,
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    context: dict[str, Any] | None = None,
    target: int = 1,
    batch_size: int = 4,
    seed: int = 0,
    **params: Any,
):
    """Run method ``name`` on ``x`` through a pass-counting wrapper, as the pipeline does.

    ``context`` adds MethodContext fields (is_script, case, progress); ``params`` are the
    method's parameters. Returns (attribution, details, pass count).
    """
    from xaimed.engine.counting import CountingModel
    from xaimed.methods import registry
    from xaimed.methods.context import MethodContext, MethodOutput

    info = registry.find(name)
    counting = CountingModel(model)
    ctx = MethodContext(
        model=counting, inputs=x, target=target, seed=seed, batch_size=batch_size,
        device=x.device, **(context or {}),
    )  # fmt: skip
    out = info.run(ctx, info.params_model.model_validate(params))
    if isinstance(out, torch.Tensor):
        out = MethodOutput(out)
    assert out.attribution.shape == x.shape
    return out.attribution.detach(), out.details, counting.count


def oblique_affine(spacing=(1.5, 2.0, 3.0), axcodes="LPS", angle=0.2) -> np.ndarray:
    """An affine with anisotropic spacing, a rotation and a non-RAS axis order."""
    flips = {"R": 1, "L": -1, "A": 1, "P": -1, "S": 1, "I": -1}
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    direction = rot @ np.diag([flips[a] for a in axcodes])
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    affine[:3, 3] = [12.5, -30.0, 7.25]
    return affine


def write_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    qform_code: int = 1,
    sform_code: int = 2,
    dtype: Any = np.int16,
) -> Path:
    """Write a NIfTI with explicit qform/sform codes (nibabel would otherwise choose them)."""
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def blob_volume(shape=(20, 18, 14), center=(10, 9, 7), seed=0) -> np.ndarray:
    """Smooth noise with a bright blob: enough structure for maps to be non-trivial."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    dist2 = sum((g - c) ** 2 for g, c in zip(grid, center, strict=True))
    return 100 * np.exp(-dist2 / 8.0) + rng.normal(0, 5, shape) + 50


@pytest.fixture(scope="session")
def tiny_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dict of TinyCNN with fixed random weights and non-trivial BatchNorm stats."""
    torch.manual_seed(0)
    model = TinyCNN()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def make_config(tmp_path: Path, tiny_state: Path) -> Callable[..., Path]:
    """Write a config for the tiny model; keyword arguments replace whole sections."""

    def _make(**sections: Any) -> Path:
        config = tiny_config(tiny_state, **sections)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return _make


def tiny_config(state: Path, **sections: Any) -> dict[str, Any]:
    """The config of the tiny model as a dict; keyword arguments replace whole sections."""
    config: dict[str, Any] = {
        "model": {
            "architecture": "tiny_models:TinyCNN",
            "python_path": [str(TESTS)],
            "weights": str(state),
            "classes": ["no", "yes"],
        },
        "preprocessing": {"intensity": {"kind": "zscore"}},
        "methods": [{"name": "saliency"}],
        "outputs": {"png": False},
        "runtime": {"device": "cpu", "threads": 1},
    }
    config.update(sections)
    return config
