"""Fills: what replaces the input where a method removes it, and their sidecar record.

One concept serves both the baselines of path and reference methods (integrated gradients,
DeepLift, GradientShap) and what perturbation methods put in a removed region. Fills live in
the model's input space (after intensity normalisation): ``zero`` there is the normalised value
0, which after z-scoring is the image mean, not air; ``min`` is the input's minimum (usually
background), ``mean`` its mean, a number is that constant (see :func:`constant_fill`). A region
can also be replaced by a blurred copy of the image (sigma in mm on the model's grid), by seeded
Gaussian noise with the image's per-channel mean and standard deviation, or by a reference
volume given on the source grid (for example a healthy template registered to the case),
preprocessed like the image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from xaimed.errors import MethodError

if TYPE_CHECKING:
    import torch

    from xaimed.methods.context import MethodContext


ConstantSpec = Literal["zero", "min", "mean"] | float


def constant_fill(spec: ConstantSpec, inputs: torch.Tensor) -> torch.Tensor:
    """A fill tensor shaped like ``inputs`` from a constant or a statistic taken per channel."""
    import torch

    if isinstance(spec, int | float):
        return torch.full_like(inputs, float(spec))
    if spec == "zero":
        return torch.zeros_like(inputs)
    dims = tuple(range(2, inputs.ndim))
    if spec == "min":
        return inputs.amin(dim=dims, keepdim=True).expand_as(inputs).clone()
    if spec == "mean":
        return inputs.mean(dim=dims, keepdim=True).expand_as(inputs).clone()
    raise ValueError(f"unknown baseline {spec!r}")


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
        return constant_fill(spec, x)
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
