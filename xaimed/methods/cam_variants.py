"""CAM variants from one forward (and backward) pass: HiResCAM, XGrad-CAM, LayerCAM, EigenCAM.

They differ from Grad-CAM only in how the layer's activations A (channels k, positions p) and the
gradient g of the target's score are combined; layer choice, upsampling and sidecar details are
those of :mod:`xaimed.methods.cam`. Written here rather than taken from pytorch-grad-cam, which
needs torchvision and OpenCV, min-max scales every map and resizes with its own image code; the
formulas are short and follow the papers:

- HiResCAM (Draelos & Carin 2020): sum_k g_k(p) A_k(p), the element-wise product, so the map at a
  position is exactly the first-order contribution of the features there. For a last layer
  followed by global average pooling and a linear head it sums to the score minus the bias.
- XGrad-CAM (Fu et al. 2020): channel weights sum_p g_k A_k / sum_p A_k.
- LayerCAM (Jiang et al. 2021): sum_k relu(g_k(p)) A_k(p), reliable at early layers too; maps of
  several layers are fused.
- EigenCAM (Muhammad & Yeasin 2020): the projection of the centred activations on their first
  principal component; no gradient and no class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaimed.methods.cam import (
    cam_output,
    capture,
    capture_layers,
    layer_name,
    map_axes,
    spatial_dims,
    to_input_grid,
    upsampling,
)
from xaimed.methods.params import EigenCamParams, GradCamParams, LayerCamParams
from xaimed.methods.spec import NEEDS_LAYER, MethodInfo, fixed_cost

if TYPE_CHECKING:
    import torch

    from xaimed.methods.context import MethodContext, MethodOutput


def _relu(cam: torch.Tensor, relu: bool) -> torch.Tensor:
    return cam.clamp(min=0) if relu else cam


def hires_cam(ctx: MethodContext, params: GradCamParams) -> MethodOutput:
    name = layer_name(ctx, params.layer)
    got = capture(ctx, name, backward=True)
    cam = (got["gradients"] * got["activations"]).sum(dim=1)
    return cam_output(_relu(cam, params.relu), ctx, name, relu=params.relu)


def xgrad_cam(ctx: MethodContext, params: GradCamParams) -> MethodOutput:
    name = layer_name(ctx, params.layer)
    got = capture(ctx, name, backward=True)
    a, g = got["activations"], got["gradients"]
    dims = spatial_dims(a)
    total = a.sum(dim=dims, keepdim=True)
    # A channel that is zero everywhere contributes nothing; its weight is 0, not 0/0.
    weights = (g * a).sum(dim=dims, keepdim=True) / total.where(total != 0, total.new_ones(()))
    cam = (weights * a).sum(dim=1)
    return cam_output(_relu(cam, params.relu), ctx, name, relu=params.relu)


def layer_cam(ctx: MethodContext, params: LayerCamParams) -> MethodOutput:
    import torch

    from xaimed.methods.context import MethodOutput

    names = [layer_name(ctx, layer) for layer in params.layers]
    if len(set(names)) != len(names):
        # 'auto' may name a layer that is listed too; one layer counted twice would weigh double.
        names = list(dict.fromkeys(names))
    maps, shapes = [], []
    for got in capture_layers(ctx, names, backward=True):
        # The ReLU is part of LayerCAM (and needed to scale maps by their maximum for fusion).
        cam = (got["gradients"].clamp(min=0) * got["activations"]).sum(dim=1).clamp(min=0)
        shapes.append(list(cam.shape[1:]))
        maps.append(to_input_grid(cam, ctx))
    details = {
        "layers": names,
        "native_shapes": shapes,
        "upsampling": upsampling(map_axes(ctx)),
        "relu": True,
    }
    if len(maps) == 1:
        return MethodOutput(maps[0], {**details, "layer": names[0], "native_shape": shapes[0]})
    # Layers' maps differ in scale by orders of magnitude (early layers have more positions and
    # smaller gradients); each is divided by its maximum so every layer counts, then fused.
    peaks = [float(m.max()) for m in maps]
    scaled = torch.stack([m / p if p > 0 else m for m, p in zip(maps, peaks, strict=True)])
    fused = scaled.mean(dim=0) if params.fusion == "mean" else scaled.amax(dim=0)
    return MethodOutput(fused, {**details, "fusion": params.fusion, "layer_maxima": peaks})


def eigen_cam(ctx: MethodContext, params: EigenCamParams) -> MethodOutput:
    import torch

    name = layer_name(ctx, params.layer)
    a = capture(ctx, name, backward=False)["activations"][0]  # (C, ...)
    features = a.reshape(a.shape[0], -1).T.double()  # (positions, C)
    centred = features - features.mean(dim=0, keepdim=True)
    # The eigenvectors of the C x C covariance give the principal components; cheaper than an SVD
    # of the positions x C matrix when there are more positions than channels, and exact.
    values, vectors = torch.linalg.eigh(centred.T @ centred)
    first = vectors[:, -1]
    # An eigenvector's sign is arbitrary: orient it so its channel loadings sum to a positive
    # number, i.e. the component grows with the features (the map is then repeatable).
    if float(first.sum()) < 0:
        first = -first
    projection = (centred @ first).reshape(a.shape[1:])[None].to(a.dtype)
    total = float(values.clamp(min=0).sum())
    explained = float(values[-1]) / total if total > 0 else 0.0
    return cam_output(
        _relu(projection, params.relu), ctx, name, relu=params.relu, class_agnostic=True,
        explained_variance=round(explained, 6),
    )  # fmt: skip


# The methods of this module, in the order `xaimed methods` lists them.
METHODS = (
    MethodInfo(
        name="hires_cam", family="cam",
        summary="HiResCAM: gradient times activations summed over channels, position by position.",
        params_model=GradCamParams, runner=hires_cam,
        cost=fixed_cost("1 fwd + 1 bwd"), needs=(NEEDS_LAYER,), needs_module=True,
    ),
    MethodInfo(
        name="xgrad_cam", family="cam",
        summary="XGrad-CAM: channel weights sum(g A) / sum(A), axiom-based Grad-CAM.",
        params_model=GradCamParams, runner=xgrad_cam,
        cost=fixed_cost("1 fwd + 1 bwd"), needs=(NEEDS_LAYER,), needs_module=True,
    ),
    MethodInfo(
        name="layer_cam", family="cam",
        summary="LayerCAM: positive gradients times activations; several layers fused.",
        params_model=LayerCamParams, runner=layer_cam,
        cost=fixed_cost("1 fwd + 1 bwd"), needs=("layers (auto: features entering pooling)",),
        needs_module=True,
    ),
    MethodInfo(
        name="eigen_cam", family="cam",
        summary="EigenCAM: first principal component of a layer's activations (class-agnostic).",
        params_model=EigenCamParams, runner=eigen_cam,
        cost=fixed_cost("1 fwd"), needs=(NEEDS_LAYER,), needs_module=True,
    ),
)  # fmt: skip
