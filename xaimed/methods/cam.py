"""CAM family: CAM, Grad-CAM, Grad-CAM++ and guided Grad-CAM on 3D (and 2D) models.

The layer helpers here (choosing the layer, capturing its activations and gradient, upsampling
to the input grid, the sidecar details) are shared with the other CAM variants
(:mod:`xaimed.methods.cam_variants`, :mod:`xaimed.methods.cam_scores`).

Written here rather than wrapped from Captum: Captum's LayerGradCam upsamples with nearest
neighbour by default, has no Grad-CAM++ or CAM, and would hide the layer's native resolution we
record. Every map is computed at the layer's resolution, then upsampled to the model's input
grid with (bi/tri)linear interpolation that aligns voxel centres (``align_corners=False``: layer
voxel j covers input voxels [j*s, (j+1)*s) for a scale s), and sent back to the source grid by the
preprocessing inverse like any other map. Values are kept raw: no min-max scaling; Grad-CAM's and
Grad-CAM++'s ReLU is part of the methods as published, recorded in the sidecar, and can be
switched off with ``relu: false``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xaimed.errors import MethodError
from xaimed.methods.params import CamParams, GradCamParams, NoParams
from xaimed.methods.spec import GUIDED_WARNING, NEEDS_LAYER, NEEDS_RELU, MethodInfo, fixed_cost

if TYPE_CHECKING:
    import torch

    from xaimed.methods.context import MethodContext, MethodOutput


# Linear interpolation of the layer's map, by number of spatial axes.
_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsampling(spatial_axes: int) -> str:
    """How a map at layer resolution is brought to the input grid, for the sidecar."""
    return f"{_MODES[spatial_axes]}, voxel centres aligned (align_corners=False)"


def map_axes(ctx: MethodContext) -> int:
    """Spatial axes of the network's feature maps: a 2D network (``model.spatial_dims: 2``)
    given planes (N, C, X, Y, 1) has two, else as many as the input has."""
    return ctx.inputs.dim() - 2 - (1 if ctx.spatial_dims == 2 else 0)


def layer_name(ctx: MethodContext, layer: str) -> str:
    """The module name for ``layer``: checked to exist, or the ``auto`` feature layer."""
    from xaimed.methods.layers import feature_layer, find_layer

    if layer == "auto":
        return feature_layer(ctx.user_network, ctx.network_inputs)
    find_layer(ctx.user_network, layer)
    return layer


def capture(ctx: MethodContext, name: str, *, backward: bool) -> dict[str, Any]:
    """Activations of layer ``name`` (and their gradient for the target) from one pass.

    Returns ``activations``, ``scores`` (the model's output), ``calls`` (how often the layer
    ran in the pass) and, with ``backward``, ``gradients`` of the target's score.
    """
    return capture_layers(ctx, [name], backward=backward)[0]


def capture_layers(ctx: MethodContext, names: list[str], *, backward: bool) -> list[dict[str, Any]]:
    """:func:`capture` for several layers from one forward (and one backward) pass."""
    import torch

    from xaimed.methods.layers import find_layer, removable

    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in names}

    def keep_for(name: str):
        def keep(module: torch.nn.Module, args: tuple, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise MethodError(f"layer {name!r} returns {type(output).__name__}, not a tensor.")
            outputs[name].append(output)

        return keep

    handles = [find_layer(ctx.user_network, n).register_forward_hook(keep_for(n)) for n in names]
    x = ctx.inputs.detach().clone().requires_grad_(backward)
    with removable(handles), torch.set_grad_enabled(backward):
        scores = ctx.model(x)
    results: list[dict[str, Any]] = []
    for name in names:
        if not outputs[name]:
            raise MethodError(
                f"layer {name!r} did not run in the forward pass; choose another layer."
            )
        # A module reused in one pass (a ReLU called twice in a residual block) is taken at its
        # last call: for `auto`, that is the call whose output enters the global pooling.
        activations = outputs[name][-1]
        if activations.dim() != 2 + map_axes(ctx):
            raise MethodError(
                f"layer {name!r} outputs shape {tuple(activations.shape)}, not a "
                f"{map_axes(ctx)}D "
                "feature map; choose a convolutional layer (`xaimed layers CONFIG`)."
            )
        results.append(
            {"activations": activations, "scores": scores.detach(), "calls": len(outputs[name])}
        )
    if backward:
        grads = torch.autograd.grad(scores[0, ctx.target], [r["activations"] for r in results])
        for result, grad in zip(results, grads, strict=True):
            result["gradients"] = grad.detach()
    for result in results:
        result["activations"] = result["activations"].detach()
    return results


def to_input_grid(cam: torch.Tensor, ctx: MethodContext) -> torch.Tensor:
    """(N, d, h, w) at layer resolution -> (N, 1, I, J, K) on the model's input grid.

    A 2D network's map (N, h, w) is upsampled bilinearly in the plane, then given the plane's
    depth axis of 1.
    """
    import torch.nn.functional as F

    size = tuple(ctx.inputs.shape[2 : 2 + map_axes(ctx)])
    up = F.interpolate(cam[:, None].float(), size=size, mode=_MODES[len(size)], align_corners=False)
    return up[..., None] if ctx.spatial_dims == 2 else up


def cam_output(cam: torch.Tensor, ctx: MethodContext, layer: str, **details: Any) -> MethodOutput:
    """The map ``cam`` (1, d, h, w) upsampled to the input grid, with the layer's details."""
    from xaimed.methods.context import MethodOutput

    return MethodOutput(
        to_input_grid(cam, ctx),
        {
            "layer": layer,
            "native_shape": list(cam.shape[1:]),
            "upsampling": upsampling(cam.dim() - 1),
            **details,
        },
    )


def spatial_dims(t: torch.Tensor) -> tuple[int, ...]:
    """The spatial axes of a (batch, channels, ...) tensor."""
    return tuple(range(2, t.dim()))


def grad_cam(ctx: MethodContext, params: GradCamParams) -> MethodOutput:
    name = layer_name(ctx, params.layer)
    got = capture(ctx, name, backward=True)
    a, g = got["activations"], got["gradients"]
    weights = g.mean(dim=spatial_dims(g), keepdim=True)
    cam = (weights * a).sum(dim=1)
    if params.relu:
        cam = cam.clamp(min=0)
    return cam_output(cam, ctx, name, relu=params.relu)


def grad_cam_pp(ctx: MethodContext, params: GradCamParams) -> MethodOutput:
    # Chattopadhay et al. 2018, with the closed form for an exponential of the score, as in
    # their paper and pytorch-grad-cam: alpha = g^2 / (2 g^2 + sum(A) g^3).
    name = layer_name(ctx, params.layer)
    got = capture(ctx, name, backward=True)
    a, g = got["activations"], got["gradients"]
    dims = spatial_dims(g)
    g2, g3 = g**2, g**3
    denominator = 2 * g2 + a.sum(dim=dims, keepdim=True) * g3
    alpha = g2 / denominator.where(denominator != 0, denominator.new_ones(()))
    weights = (alpha * g.clamp(min=0)).sum(dim=dims, keepdim=True)
    cam = (weights * a).sum(dim=1)
    if params.relu:
        cam = cam.clamp(min=0)
    return cam_output(cam, ctx, name, relu=params.relu)


def cam(ctx: MethodContext, params: CamParams) -> MethodOutput:

    name = layer_name(ctx, "auto")
    got = capture(ctx, name, backward=False)
    features, scores = got["activations"], got["scores"]
    head = _linear_head(ctx, features, scores)
    weights = head.weight.detach()[ctx.target]  # (K,)
    shape = (1, -1) + (1,) * (features.dim() - 2)
    cam_map = (weights.reshape(shape).to(features.dtype) * features).sum(dim=1)
    return cam_output(cam_map, ctx, name, relu=False, head=type(head).__name__)


def _linear_head(ctx: MethodContext, features: torch.Tensor, scores: torch.Tensor) -> Any:
    """The model's last Linear, after checking that scores = Linear(mean of the features).

    CAM is only defined for that architecture; checking the numbers rather than module types
    also catches a functional ReLU, dropout-in-train or a second linear layer after pooling.
    """
    import torch

    linears = [m for m in ctx.user_network.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise MethodError(
            "cam needs a model whose head is global average pooling followed by one linear "
            "layer; this model has no torch.nn.Linear. Use grad_cam, which applies to any CNN."
        )
    head = linears[-1]
    pooled = features.mean(dim=spatial_dims(features)).to(head.weight.dtype)
    if pooled.shape[-1] != head.in_features:
        raise MethodError(
            f"cam needs global average pooling followed by one linear layer, but the features "
            f"entering the pooling have {pooled.shape[-1]} channels and the last linear layer "
            f"takes {head.in_features}; use grad_cam instead."
        )
    expected = torch.nn.functional.linear(pooled, head.weight, head.bias)
    if expected.shape != scores.shape or not torch.allclose(
        expected, scores.to(expected.dtype), rtol=1e-4, atol=1e-5 * float(scores.abs().max() + 1)
    ):
        raise MethodError(
            "cam needs a model whose output is one linear layer applied to the global average "
            "of the last feature map; this model's output is not (another layer, a non-linearity "
            "or max pooling follows the features); use grad_cam instead."
        )
    return head


def guided_grad_cam(ctx: MethodContext, params: GradCamParams) -> MethodOutput:
    from xaimed.methods.context import MethodOutput
    from xaimed.methods.gradient import guided_backprop

    grad_cam_map = grad_cam(ctx, params)
    guided = guided_backprop(ctx, NoParams())
    details = {**grad_cam_map.details, "combined_with": "guided_backprop (element-wise product)"}
    return MethodOutput(guided * grad_cam_map.attribution, details)


# The methods of this module, in the order `xaimed methods` lists them.
METHODS = (
    MethodInfo(
        name="grad_cam", family="cam", summary="Gradient-weighted class activation map at a layer.",
        params_model=GradCamParams, runner=grad_cam, cost=fixed_cost("1 fwd + 1 bwd"),
        needs=(NEEDS_LAYER,), needs_module=True,
    ),
    MethodInfo(
        name="grad_cam_pp", family="cam",
        summary="Grad-CAM++: pixel-wise weighted gradients, better for several instances.",
        params_model=GradCamParams, runner=grad_cam_pp, cost=fixed_cost("1 fwd + 1 bwd"),
        needs=(NEEDS_LAYER,), needs_module=True,
    ),
    MethodInfo(
        name="cam", family="cam",
        summary="Class activation map: linear-head weights times the last features (GAP + linear).",
        params_model=CamParams, runner=cam, cost=fixed_cost("1 fwd"),
        needs=("global average pooling + linear head",), needs_module=True,
    ),
    MethodInfo(
        name="guided_grad_cam", family="cam", summary="Guided backprop times upsampled Grad-CAM.",
        params_model=GradCamParams, runner=guided_grad_cam,
        cost=fixed_cost("2 fwd + 2 bwd"), needs=(NEEDS_LAYER, NEEDS_RELU), needs_module=True,
        warning=GUIDED_WARNING,
    ),
)  # fmt: skip
