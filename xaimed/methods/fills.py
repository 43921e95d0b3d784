"""What a removed region is replaced with in perturbation methods, and its sidecar record.

On top of the constants of :mod:`xaimed.methods.baselines` (``zero``, ``min``, ``mean``, a
number; in the model's input space, after intensity normalisation), a region can be replaced by
a blurred copy of the image (sigma in mm on the model's grid), by seeded Gaussian noise with the
image's per-channel mean and standard deviation, or by a reference volume given on the source
grid (for example a healthy template registered to the case), preprocessed like the image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from xaimed.errors import MethodError
from xaimed.methods.baselines import make_baseline

if TYPE_CHECKING:
    import torch

    from xaimed.methods.context import MethodContext


class _Fill(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlurFill(_Fill):
    """A Gaussian-blurred copy of the input."""

    kind: Literal["blur"] = "blur"
    sigma_mm: Annotated[float, Field(gt=0)] = 8.0


# The perturbation methods' default fill, chosen by measurement (benchmarks/baselines.py, README
# "Defaults chosen by measurement"): a constant cube inside anatomy is itself a lesion-like
# anomaly that raises a lesion score, a blurred copy removes detail without adding an edge.
FILL_DEFAULT = "What a removed region becomes; default: a blurred copy, sigma 8 mm."


class NoiseFill(_Fill):
    """Gaussian noise with the image's mean and standard deviation (per channel), seeded."""

    kind: Literal["noise"]
    scale: Annotated[float, Field(gt=0)] = Field(1.0, description="Multiplies the image's std.")


class ReferenceFill(_Fill):
    """A reference volume on the source grid; ``{case_id}`` in the path is filled in."""

    kind: Literal["reference"]
    path: str


def _fill_kind(value: Any) -> str | None:
    """Which variant a baseline value is, so that a wrong one gets one error, not five."""
    if isinstance(value, dict):
        return value.get("kind")
    if isinstance(value, BaseModel):
        return getattr(value, "kind", None)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "number"
    return "named" if value in ("zero", "min", "mean") else None


FillSpec = Annotated[
    Annotated[Literal["zero", "min", "mean"], Tag("named")]
    | Annotated[float, Tag("number")]
    | Annotated[BlurFill, Tag("blur")]
    | Annotated[NoiseFill, Tag("noise")]
    | Annotated[ReferenceFill, Tag("reference")],
    Discriminator(
        _fill_kind,
        custom_error_type="baseline",
        custom_error_message=(
            "expected 'zero', 'min', 'mean', a number, or a mapping with kind: blur, noise or "
            "reference"
        ),
    ),
]


def describe_fill(spec: FillSpec) -> Any:
    """The fill as recorded in the sidecar."""
    return spec.model_dump() if isinstance(spec, BaseModel) else spec


def make_fill(spec: FillSpec, ctx: MethodContext) -> torch.Tensor:
    """The replacement values, shaped like ``ctx.inputs``, on its device."""
    import torch

    x = ctx.inputs
    if not isinstance(spec, BaseModel):
        return make_baseline(spec, x)
    if isinstance(spec, BlurFill):
        import numpy as np
        from scipy import ndimage

        spacing = ctx.case.spacing_mm if ctx.case is not None else (1.0, 1.0, 1.0)
        sigma = [spec.sigma_mm / s for s in spacing]
        data = x[0].detach().float().cpu().numpy()
        blurred = [ndimage.gaussian_filter(c, sigma, mode="nearest") for c in data]
        return torch.from_numpy(np.stack(blurred)).reshape(x.shape).to(x.device, x.dtype)
    if isinstance(spec, NoiseFill):
        dims = tuple(range(2, x.ndim))
        mean, std = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True)
        gen = torch.Generator().manual_seed(ctx.seed)
        noise = torch.randn(tuple(x.shape), generator=gen, dtype=torch.float32)
        return (mean + spec.scale * std * noise.to(x.device)).to(x.dtype)
    if ctx.case is None:
        raise MethodError("a reference baseline needs a case (run it through xaimed explain).")
    array = ctx.case.image(spec.path, "baseline.path")
    if tuple(array.shape) != tuple(x.shape[1:]):
        raise MethodError(
            f"case {ctx.case.case_id}: the preprocessed reference has shape {array.shape}, the "
            f"image {tuple(x.shape[1:])}; give a reference on the image's grid."
        )
    return torch.as_tensor(array, dtype=x.dtype)[None].to(x.device)
