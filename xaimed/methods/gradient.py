"""Gradient-family methods, backed by Captum.

Every runner returns Captum's raw signed attribution. Captum's ``Saliency`` takes the absolute
value by default; we ask for the signed gradient, since the sign tells for and against, and
``abs`` is an explicit post-processing option instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from xaimed.engine.seeding import seed_everything
from xaimed.errors import MethodError
from xaimed.methods.fills import BlurFill, FillSpec, make_fill
from xaimed.methods.registry import MethodInfo, register

if TYPE_CHECKING:
    import torch

    from xaimed.methods.context import MethodContext

# Defaults chosen by measurement (benchmarks/baselines.py, README "Defaults chosen by
# measurement"): against a blurred copy, the path from baseline to input adds the image's detail
# (a lesion) rather than the whole head's contrast against a constant, which put integrated
# gradients' strongest voxels on the head's outline; GradientShap did best with [zero].
BASELINE_DEFAULT = "Reference input; default: a blurred copy of the image, sigma 8 mm."

GUIDED_WARNING = (
    "failed published model- and data-randomisation sanity checks (Adebayo et al. 2018): "
    "its maps can look like edge detectors independent of what the model learned"
)


class Params(BaseModel):
    """Base of method parameters: unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid")


class NoParams(Params):
    """A method without parameters."""


class IntegratedGradientsParams(Params):
    """Integrated gradients along the straight path from a baseline to the input."""

    baseline: FillSpec = Field(default_factory=BlurFill, description=BASELINE_DEFAULT)
    steps: Annotated[int, Field(ge=2, le=10_000)] = 50
    integration: Literal["gausslegendre", "riemann_trapezoid", "riemann_middle"] = "gausslegendre"
    internal_batch_size: Annotated[int, Field(ge=1)] | None = None


class NoiseTunnelParams(Params):
    """SmoothGrad / VarGrad: gradients averaged (or their variance) over noisy copies."""

    samples: Annotated[int, Field(ge=1, le=10_000)] = 25
    noise: Annotated[float, Field(gt=0)] = Field(
        0.15, description="Noise standard deviation as a fraction of the input's value range."
    )
    internal_batch_size: Annotated[int, Field(ge=1)] | None = None


class DeepLiftParams(Params):
    """DeepLift (rescale rule) against a baseline."""

    baseline: FillSpec = Field(default_factory=BlurFill, description=BASELINE_DEFAULT)


class GradientShapParams(Params):
    """GradientShap: expected gradients over noisy points between baselines and the input."""

    baselines: list[FillSpec] = Field(default_factory=lambda: ["zero"], min_length=1)
    samples: Annotated[int, Field(ge=1, le=10_000)] = 20
    noise: Annotated[float, Field(ge=0)] = Field(
        0.1, description="Noise standard deviation as a fraction of the input's value range."
    )
    internal_batch_size: Annotated[int, Field(ge=1)] | None = None


def _batch(ctx: MethodContext, requested: int | None) -> int:
    return requested or ctx.batch_size


def _value_range(inputs: torch.Tensor) -> float:
    span = float(inputs.max() - inputs.min())
    return span if span > 0 else 1.0


def _require_module(ctx: MethodContext, method: str) -> None:
    import torch

    if ctx.is_script:
        raise MethodError(
            f"{method} hooks the model's layers, which a TorchScript model does not allow; "
            "load the model as `architecture` + `weights` instead."
        )
    if not any(isinstance(m, torch.nn.ReLU) for m in ctx.model.modules()):
        raise MethodError(
            f"{method} overrides the gradient of ReLU modules, but the model has no torch.nn.ReLU "
            "module (a functional relu cannot be hooked); the result would silently equal the "
            "plain gradient, so it is refused."
        )


def saliency(ctx: MethodContext, params: NoParams) -> torch.Tensor:
    from captum.attr import Saliency

    return Saliency(ctx.model).attribute(ctx.inputs, target=ctx.target, abs=False)


def input_x_gradient(ctx: MethodContext, params: NoParams) -> torch.Tensor:
    from captum.attr import InputXGradient

    return InputXGradient(ctx.model).attribute(ctx.inputs, target=ctx.target)


def integrated_gradients(ctx: MethodContext, params: IntegratedGradientsParams) -> torch.Tensor:
    from captum.attr import IntegratedGradients

    return IntegratedGradients(ctx.model).attribute(
        ctx.inputs,
        baselines=make_fill(params.baseline, ctx),
        target=ctx.target,
        n_steps=params.steps,
        method=params.integration,
        internal_batch_size=_batch(ctx, params.internal_batch_size),
    )


def _noise_tunnel(ctx: MethodContext, params: NoiseTunnelParams, kind: str) -> torch.Tensor:
    from captum.attr import NoiseTunnel, Saliency

    seed_everything(ctx.seed)
    return NoiseTunnel(Saliency(ctx.model)).attribute(
        ctx.inputs,
        nt_type=kind,
        nt_samples=params.samples,
        nt_samples_batch_size=_batch(ctx, params.internal_batch_size),
        stdevs=params.noise * _value_range(ctx.inputs),
        target=ctx.target,
        abs=False,
    )


def smoothgrad(ctx: MethodContext, params: NoiseTunnelParams) -> torch.Tensor:
    return _noise_tunnel(ctx, params, "smoothgrad")


def vargrad(ctx: MethodContext, params: NoiseTunnelParams) -> torch.Tensor:
    return _noise_tunnel(ctx, params, "vargrad")


def guided_backprop(ctx: MethodContext, params: NoParams) -> torch.Tensor:
    from captum.attr import GuidedBackprop

    _require_module(ctx, "guided_backprop")
    return GuidedBackprop(ctx.model).attribute(ctx.inputs, target=ctx.target)


def deconvolution(ctx: MethodContext, params: NoParams) -> torch.Tensor:
    from captum.attr import Deconvolution

    _require_module(ctx, "deconvolution")
    return Deconvolution(ctx.model).attribute(ctx.inputs, target=ctx.target)


def deeplift(ctx: MethodContext, params: DeepLiftParams) -> torch.Tensor:
    from captum.attr import DeepLift

    _require_module(ctx, "deeplift")
    return DeepLift(ctx.model).attribute(
        ctx.inputs, baselines=make_fill(params.baseline, ctx), target=ctx.target
    )


def gradient_shap(ctx: MethodContext, params: GradientShapParams) -> torch.Tensor:
    import torch
    from captum.attr import GradientShap

    baselines = torch.cat([make_fill(b, ctx) for b in params.baselines])
    stdev = params.noise * _value_range(ctx.inputs)
    # Captum's GradientShap sends all samples through the model at once; split them into
    # batches and weight each batch's mean by its size, which gives the same expectation.
    seed_everything(ctx.seed)
    explainer = GradientShap(ctx.model)
    batch = _batch(ctx, params.internal_batch_size)
    total = torch.zeros_like(ctx.inputs)
    done = 0
    while done < params.samples:
        n = min(batch, params.samples - done)
        part = explainer.attribute(
            ctx.inputs, baselines=baselines, n_samples=n, stdevs=stdev, target=ctx.target
        )
        total += part.detach() * n
        done += n
    return total / params.samples


def _fixed(cost: str):
    return lambda params: cost


register(
    MethodInfo(
        name="saliency",
        family="gradient",
        summary="Signed gradient of the target w.r.t. the input.",
        params_model=NoParams,
        run=saliency,
        cost=_fixed("1 fwd + 1 bwd"),
    )
)
register(
    MethodInfo(
        name="input_x_gradient",
        family="gradient",
        summary="Input times its gradient.",
        params_model=NoParams,
        run=input_x_gradient,
        cost=_fixed("1 fwd + 1 bwd"),
    )
)
register(
    MethodInfo(
        name="integrated_gradients",
        family="gradient",
        summary="Gradients integrated along the path from a baseline to the input.",
        params_model=IntegratedGradientsParams,
        run=integrated_gradients,
        needs=("baseline",),
        cost=lambda p: f"{p.steps} fwd + {p.steps} bwd",
    )
)
register(
    MethodInfo(
        name="smoothgrad",
        family="gradient",
        summary="Gradient averaged over noisy copies.",
        params_model=NoiseTunnelParams,
        run=smoothgrad,
        cost=lambda p: f"{p.samples} fwd + {p.samples} bwd",
    )
)
register(
    MethodInfo(
        name="vargrad",
        family="gradient",
        summary="Variance of the gradient over noisy copies.",
        params_model=NoiseTunnelParams,
        run=vargrad,
        cost=lambda p: f"{p.samples} fwd + {p.samples} bwd",
    )
)
register(
    MethodInfo(
        name="guided_backprop",
        family="gradient",
        summary="Gradient with negative signals stopped at every ReLU.",
        params_model=NoParams,
        run=guided_backprop,
        cost=_fixed("1 fwd + 1 bwd"),
        needs=("nn.Module with ReLU modules",),
        needs_module=True,
        warning=GUIDED_WARNING,
    )
)
register(
    MethodInfo(
        name="deconvolution",
        family="gradient",
        summary="Backward pass with ReLU applied to the gradient (Zeiler & Fergus).",
        params_model=NoParams,
        run=deconvolution,
        cost=_fixed("1 fwd + 1 bwd"),
        needs=("nn.Module with ReLU modules",),
        needs_module=True,
    )
)
register(
    MethodInfo(
        name="deeplift",
        family="decomposition",
        summary="DeepLift rescale rule: contributions relative to a baseline.",
        params_model=DeepLiftParams,
        run=deeplift,
        cost=_fixed("2 fwd + 1 bwd"),
        needs=("baseline", "nn.Module with ReLU modules"),
        needs_module=True,
    )
)
register(
    MethodInfo(
        name="gradient_shap",
        family="gradient",
        summary="Expected gradients between baselines and noisy copies of the input (SHAP).",
        params_model=GradientShapParams,
        run=gradient_shap,
        needs=("baselines",),
        cost=lambda p: f"{p.samples} fwd + {p.samples} bwd",
    )
)
