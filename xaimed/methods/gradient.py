"""Gradient-family methods, backed by Captum.

Every runner returns Captum's raw signed attribution. Captum's ``Saliency`` takes the absolute
value by default; we ask for the signed gradient, since the sign tells for and against, and
``abs`` is an explicit post-processing option instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaimed.errors import MethodError
from xaimed.methods.fills import make_fill
from xaimed.methods.params import (
    DeepLiftParams,
    GradientShapParams,
    IntegratedGradientsParams,
    NoiseTunnelParams,
    NoParams,
)
from xaimed.methods.spec import GUIDED_WARNING, NEEDS_RELU, MethodInfo, fixed_cost, noise_passes

if TYPE_CHECKING:
    import torch

    from xaimed.methods.context import MethodContext


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

    from xaimed.engine.seeding import seed_everything

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
    from xaimed.engine.seeding import seed_everything

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


# The methods of this module, in the order `xaimed methods` lists them.
METHODS = (
    MethodInfo(
        name="saliency", family="gradient",
        summary="Signed gradient of the target w.r.t. the input.",
        params_model=NoParams, runner=saliency, cost=fixed_cost("1 fwd + 1 bwd"),
    ),
    MethodInfo(
        name="input_x_gradient", family="gradient", summary="Input times its gradient.",
        params_model=NoParams, runner=input_x_gradient,
        cost=fixed_cost("1 fwd + 1 bwd"),
    ),
    MethodInfo(
        name="integrated_gradients", family="gradient",
        summary="Gradients integrated along the path from a baseline to the input.",
        params_model=IntegratedGradientsParams, runner=integrated_gradients,
        needs=("baseline",), cost=lambda q: f"{q.steps} fwd + {q.steps} bwd",
    ),
    MethodInfo(
        name="smoothgrad", family="gradient", summary="Gradient averaged over noisy copies.",
        params_model=NoiseTunnelParams, runner=smoothgrad, cost=noise_passes,
    ),
    MethodInfo(
        name="vargrad", family="gradient", summary="Variance of the gradient over noisy copies.",
        params_model=NoiseTunnelParams, runner=vargrad, cost=noise_passes,
    ),
    MethodInfo(
        name="guided_backprop", family="gradient",
        summary="Gradient with negative signals stopped at every ReLU.",
        params_model=NoParams, runner=guided_backprop,
        cost=fixed_cost("1 fwd + 1 bwd"), needs=(NEEDS_RELU,), needs_module=True,
        warning=GUIDED_WARNING,
    ),
    MethodInfo(
        name="deconvolution", family="gradient",
        summary="Backward pass with ReLU applied to the gradient (Zeiler & Fergus).",
        params_model=NoParams, runner=deconvolution,
        cost=fixed_cost("1 fwd + 1 bwd"), needs=(NEEDS_RELU,), needs_module=True,
    ),
    MethodInfo(
        name="deeplift", family="decomposition",
        summary="DeepLift rescale rule: contributions relative to a baseline.",
        params_model=DeepLiftParams, runner=deeplift,
        cost=fixed_cost("2 fwd + 1 bwd"), needs=("baseline", NEEDS_RELU), needs_module=True,
    ),
    MethodInfo(
        name="gradient_shap", family="gradient",
        summary="Expected gradients between baselines and noisy copies of the input (SHAP).",
        params_model=GradientShapParams, runner=gradient_shap,
        needs=("baselines",), cost=noise_passes,
    ),
)  # fmt: skip
