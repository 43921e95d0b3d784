"""The method registry: every attribution method's specification, under a unique name.

A specification (:class:`MethodInfo`) says what a method is (family, summary, needs, cost), which
pydantic model validates its parameters (:mod:`xaimed.methods.params`) and where its runner lives,
as an import path. Nothing here imports a method family or torch: the config validates method
names and parameters against this table at load, ``xaimed methods`` prints it, and a runner's
module is imported only when the method first runs.

A runner has one contract: ``run(context, params) -> attribution``, the attribution shaped like
``context.inputs`` (batch of one, channels, spatial axes), raw and signed; a runner with more to
report returns a ``MethodOutput`` whose details go into the sidecar. A new method is one runner in
its family module, a parameter model in ``params`` and one ``register`` entry below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from xaimed.methods import params as p

if TYPE_CHECKING:
    import torch

    from xaimed.methods.context import MethodContext, MethodOutput

Runner = Callable[["MethodContext", Any], "torch.Tensor | MethodOutput"]

# Measured on the sample model by benchmarks/sanity_cascade.py: its map survives
# re-initialising the top layers better than saliency's, but decorrelates once every layer is
# random, so the warning names the published result and leaves the verdict to the evaluation.
GUIDED_WARNING = (
    "failed published model- and data-randomisation sanity checks on deep image classifiers "
    "(Adebayo et al. 2018: its maps barely changed when the top layers were randomised, like "
    "edge detectors); `xaimed evaluate` (sanity) measures whether it does on this model"
)


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows of a method; ``runner`` is 'module:function' of its code."""

    name: str
    family: str
    summary: str
    params_model: type[BaseModel]
    runner: str
    cost: Callable[[Any], str]
    needs: tuple[str, ...] = ()
    # Methods that need forward hooks on nn.Module submodules cannot run on TorchScript.
    needs_module: bool = False
    # Set for methods that failed published sanity checks; shown wherever their maps go.
    warning: str | None = None

    def run(self, context: MethodContext, params: Any) -> torch.Tensor | MethodOutput:
        """Run the method on one input with validated parameters."""
        module, function = self.runner.split(":")
        implementation: Runner = getattr(importlib.import_module(module), function)
        return implementation(context, params)


_REGISTRY: dict[str, MethodInfo] = {}


def register(info: MethodInfo) -> MethodInfo:
    """Add a method; a second method under the same name is a programming error."""
    if info.name in _REGISTRY:
        raise ValueError(f"method {info.name!r} is registered twice")
    _REGISTRY[info.name] = info
    return info


def find(name: str) -> MethodInfo | None:
    """The method registered as ``name``, or None."""
    return _REGISTRY.get(name)


def method(name: str) -> MethodInfo:
    """The method registered as ``name``, for a name a validated config holds."""
    info = _REGISTRY.get(name)
    if info is None:
        raise RuntimeError(f"method {name!r} is not registered; configs are validated against it")
    return info


def names() -> list[str]:
    """All registered method names, in registration order."""
    return list(_REGISTRY)


def all_methods() -> list[MethodInfo]:
    """All registered methods, in registration order."""
    return list(_REGISTRY.values())


def _fixed(cost: str) -> Callable[[Any], str]:
    return lambda params: cost


def _passes(params: Any) -> str:
    return f"{params.samples} fwd + {params.samples} bwd"


_GRADIENT = "xaimed.methods.gradient"
_CAM = "xaimed.methods.cam"
_CAM_VARIANTS = "xaimed.methods.cam_variants"
_CAM_SCORES = "xaimed.methods.cam_scores"
_PERTURBATION = "xaimed.methods.perturbation"
_RELU = "nn.Module with ReLU modules"
_LAYER = "a layer (auto: features entering global pooling)"
_GROUPS_NEED = ("grouping", "baseline")

for _info in (
    # ------------------------------------------------------------ gradient family (Captum)
    MethodInfo(
        name="saliency", family="gradient",
        summary="Signed gradient of the target w.r.t. the input.",
        params_model=p.NoParams, runner=f"{_GRADIENT}:saliency", cost=_fixed("1 fwd + 1 bwd"),
    ),
    MethodInfo(
        name="input_x_gradient", family="gradient", summary="Input times its gradient.",
        params_model=p.NoParams, runner=f"{_GRADIENT}:input_x_gradient",
        cost=_fixed("1 fwd + 1 bwd"),
    ),
    MethodInfo(
        name="integrated_gradients", family="gradient",
        summary="Gradients integrated along the path from a baseline to the input.",
        params_model=p.IntegratedGradientsParams, runner=f"{_GRADIENT}:integrated_gradients",
        needs=("baseline",), cost=lambda q: f"{q.steps} fwd + {q.steps} bwd",
    ),
    MethodInfo(
        name="smoothgrad", family="gradient", summary="Gradient averaged over noisy copies.",
        params_model=p.NoiseTunnelParams, runner=f"{_GRADIENT}:smoothgrad", cost=_passes,
    ),
    MethodInfo(
        name="vargrad", family="gradient", summary="Variance of the gradient over noisy copies.",
        params_model=p.NoiseTunnelParams, runner=f"{_GRADIENT}:vargrad", cost=_passes,
    ),
    MethodInfo(
        name="guided_backprop", family="gradient",
        summary="Gradient with negative signals stopped at every ReLU.",
        params_model=p.NoParams, runner=f"{_GRADIENT}:guided_backprop",
        cost=_fixed("1 fwd + 1 bwd"), needs=(_RELU,), needs_module=True, warning=GUIDED_WARNING,
    ),
    MethodInfo(
        name="deconvolution", family="gradient",
        summary="Backward pass with ReLU applied to the gradient (Zeiler & Fergus).",
        params_model=p.NoParams, runner=f"{_GRADIENT}:deconvolution",
        cost=_fixed("1 fwd + 1 bwd"), needs=(_RELU,), needs_module=True,
    ),
    MethodInfo(
        name="deeplift", family="decomposition",
        summary="DeepLift rescale rule: contributions relative to a baseline.",
        params_model=p.DeepLiftParams, runner=f"{_GRADIENT}:deeplift",
        cost=_fixed("2 fwd + 1 bwd"), needs=("baseline", _RELU), needs_module=True,
    ),
    MethodInfo(
        name="gradient_shap", family="gradient",
        summary="Expected gradients between baselines and noisy copies of the input (SHAP).",
        params_model=p.GradientShapParams, runner=f"{_GRADIENT}:gradient_shap",
        needs=("baselines",), cost=_passes,
    ),
    # ------------------------------------------------------------ CAM family
    MethodInfo(
        name="grad_cam", family="cam", summary="Gradient-weighted class activation map at a layer.",
        params_model=p.GradCamParams, runner=f"{_CAM}:grad_cam", cost=_fixed("1 fwd + 1 bwd"),
        needs=(_LAYER,), needs_module=True,
    ),
    MethodInfo(
        name="grad_cam_pp", family="cam",
        summary="Grad-CAM++: pixel-wise weighted gradients, better for several instances.",
        params_model=p.GradCamParams, runner=f"{_CAM}:grad_cam_pp", cost=_fixed("1 fwd + 1 bwd"),
        needs=(_LAYER,), needs_module=True,
    ),
    MethodInfo(
        name="cam", family="cam",
        summary="Class activation map: linear-head weights times the last features (GAP + linear).",
        params_model=p.CamParams, runner=f"{_CAM}:cam", cost=_fixed("1 fwd"),
        needs=("global average pooling + linear head",), needs_module=True,
    ),
    MethodInfo(
        name="guided_grad_cam", family="cam", summary="Guided backprop times upsampled Grad-CAM.",
        params_model=p.GradCamParams, runner=f"{_CAM}:guided_grad_cam",
        cost=_fixed("2 fwd + 2 bwd"), needs=(_LAYER, _RELU), needs_module=True,
        warning=GUIDED_WARNING,
    ),
    MethodInfo(
        name="hires_cam", family="cam",
        summary="HiResCAM: gradient times activations summed over channels, position by position.",
        params_model=p.GradCamParams, runner=f"{_CAM_VARIANTS}:hires_cam",
        cost=_fixed("1 fwd + 1 bwd"), needs=(_LAYER,), needs_module=True,
    ),
    MethodInfo(
        name="xgrad_cam", family="cam",
        summary="XGrad-CAM: channel weights sum(g A) / sum(A), axiom-based Grad-CAM.",
        params_model=p.GradCamParams, runner=f"{_CAM_VARIANTS}:xgrad_cam",
        cost=_fixed("1 fwd + 1 bwd"), needs=(_LAYER,), needs_module=True,
    ),
    MethodInfo(
        name="layer_cam", family="cam",
        summary="LayerCAM: positive gradients times activations; several layers fused.",
        params_model=p.LayerCamParams, runner=f"{_CAM_VARIANTS}:layer_cam",
        cost=_fixed("1 fwd + 1 bwd"), needs=("layers (auto: features entering pooling)",),
        needs_module=True,
    ),
    MethodInfo(
        name="score_cam", family="cam",
        summary="Score-CAM: channels weighted by the score of the input masked with each.",
        params_model=p.ScoreCamParams, runner=f"{_CAM_SCORES}:score_cam",
        cost=_fixed("1 + one fwd per channel of the layer"), needs=(_LAYER,), needs_module=True,
    ),
    MethodInfo(
        name="ablation_cam", family="cam",
        summary="Ablation-CAM: channels weighted by the score drop when each is set to zero.",
        params_model=p.AblationCamParams, runner=f"{_CAM_SCORES}:ablation_cam",
        cost=_fixed("1 + one fwd per channel of the layer"), needs=(_LAYER,), needs_module=True,
    ),
    MethodInfo(
        name="eigen_cam", family="cam",
        summary="EigenCAM: first principal component of a layer's activations (class-agnostic).",
        params_model=p.EigenCamParams, runner=f"{_CAM_VARIANTS}:eigen_cam",
        cost=_fixed("1 fwd"), needs=(_LAYER,), needs_module=True,
    ),
    # ------------------------------------------------------------ decomposition
    MethodInfo(
        name="lrp", family="decomposition",
        summary="Layer-wise relevance propagation (epsilon, gamma, alpha-beta; composite per "
        "type).",
        params_model=p.LrpParams, runner="xaimed.methods.lrp:lrp", cost=_fixed("1 fwd + 1 bwd"),
        needs=("nn.Module of supported layers",), needs_module=True,
    ),
    # ------------------------------------------------------------ perturbation family
    MethodInfo(
        name="occlusion", family="perturbation",
        summary="Score drop when a sliding box is replaced by the baseline.",
        params_model=p.OcclusionParams, runner=f"{_PERTURBATION}:occlusion",
        needs=("baseline",), cost=_fixed("1 + one fwd per window position"),
    ),
    MethodInfo(
        name="feature_ablation", family="perturbation",
        summary="Score drop when each feature group is replaced by the baseline.",
        params_model=p.FeatureAblationParams, runner=f"{_PERTURBATION}:feature_ablation",
        needs=_GROUPS_NEED, cost=_fixed("1 + one fwd per group"),
    ),
    MethodInfo(
        name="shapley_sampling", family="perturbation",
        summary="Shapley values of feature groups, sampled over random permutations.",
        params_model=p.ShapleyParams, runner=f"{_PERTURBATION}:shapley_sampling",
        needs=_GROUPS_NEED, cost=lambda q: f"1 + {q.samples} x groups fwd",
    ),
    MethodInfo(
        name="kernel_shap", family="perturbation",
        summary="KernelSHAP: Shapley values of feature groups by weighted regression.",
        params_model=p.KernelShapParams, runner=f"{_PERTURBATION}:kernel_shap",
        needs=_GROUPS_NEED, cost=lambda q: f"{q.samples + 2} fwd",
    ),
    MethodInfo(
        name="lime", family="perturbation",
        summary="LIME: a locally weighted linear model of the score over feature groups.",
        params_model=p.LimeParams, runner=f"{_PERTURBATION}:lime",
        needs=_GROUPS_NEED, cost=lambda q: f"{q.samples + 1} fwd",
    ),
):  # fmt: skip
    register(_info)
