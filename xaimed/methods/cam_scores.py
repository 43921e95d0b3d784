"""Gradient-free CAM variants: Score-CAM and Ablation-CAM.

Both weight a layer's channels by forward passes, one per channel, instead of by gradients. The
passes go through :class:`xaimed.engine.perturb.Evaluator` like the perturbation family's: built
batch by batch (never all channels at once), the batch size from ``runtime.memory_budget`` and
halved on out-of-memory errors, progress reported, passes counted. Layer choice, upsampling and
sidecar details are those of :mod:`xaimed.methods.cam`.

- Score-CAM (Wang et al. 2020): each channel, upsampled to the input grid and min-max scaled to
  [0, 1], masks the input: input times mask plus the ``baseline`` fill times one minus mask, in
  the model's input space. The paper and pytorch-grad-cam take input times mask, which on images
  scaled to [0, 1] fills with black; ``min`` (the default) is that background for any intensity
  normalisation, where after z-scoring 0 would be the image mean. The channel's weight is the
  softmax over channels of the target's scores of the masked inputs (pytorch-grad-cam's form;
  the paper's "increase of confidence" uses class probabilities against a baseline input).
- Ablation-CAM (Desai & Ramaswamy 2020): each channel of the layer is set to zero in the forward
  pass; its weight is the target's score drop. The paper and pytorch-grad-cam divide the drops by
  the unablated score; that only rescales the map, and flips its sign when the score is
  negative, so the drops are kept as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xaimed.methods.cam import cam_output, capture, layer_name, spatial_dims, to_input_grid
from xaimed.methods.fills import describe_fill, make_fill
from xaimed.methods.params import AblationCamParams, ScoreCamParams
from xaimed.methods.spec import NEEDS_LAYER, MethodInfo, fixed_cost

if TYPE_CHECKING:
    import torch

    from xaimed.engine.perturb import Evaluator
    from xaimed.methods.context import MethodContext, MethodOutput


def _evaluator(ctx: MethodContext) -> Evaluator:
    from xaimed.engine.perturb import Evaluator

    return Evaluator(ctx.model, ctx.target, ctx.batch_size, progress=ctx.progress)


def _weighted(weights: torch.Tensor, a: torch.Tensor, relu: bool) -> torch.Tensor:
    """sum_k weights_k A_k for activations (1, K, ...), at layer resolution (1, ...)."""
    shape = (1, -1) + (1,) * (a.dim() - 2)
    cam = (weights.reshape(shape).to(a.dtype) * a).sum(dim=1)
    return cam.clamp(min=0) if relu else cam


def _details(evaluator: Evaluator, relu: bool, **extra: Any) -> dict[str, Any]:
    return {
        "relu": relu,
        "perturbations": evaluator.samples,
        "batch_size": evaluator.batch_size,
        "out_of_memory_backoffs": evaluator.backoffs,
        **extra,
    }


def score_cam(ctx: MethodContext, params: ScoreCamParams) -> MethodOutput:
    import torch

    name = layer_name(ctx, params.layer)
    a = capture(ctx, name, backward=False)["activations"]
    x = ctx.inputs.detach()
    fill = make_fill(params.baseline, ctx)
    channels = int(a.shape[1])

    def masked(start: int, stop: int) -> torch.Tensor:
        # Only this batch's masks exist at input resolution: (B, 1, I, J, K).
        up = to_input_grid(a[0, start:stop], ctx)
        dims = spatial_dims(up)
        lo, hi = up.amin(dim=dims, keepdim=True), up.amax(dim=dims, keepdim=True)
        span = hi - lo
        # A constant channel carries no location: its mask is zero everywhere.
        masks = (up - lo) / span.where(span > 0, span.new_ones(()))
        masks = masks.to(x.dtype)
        return x * masks + fill * (1 - masks)

    evaluator = _evaluator(ctx)
    scores = evaluator.scores(channels, masked, label="score_cam")
    weights = torch.softmax(scores.double(), dim=0)
    details = _details(
        evaluator, params.relu, channels=channels, baseline=describe_fill(params.baseline),
        weights="softmax over channels of the target's scores of the masked inputs",
    )  # fmt: skip
    return cam_output(_weighted(weights, a, params.relu), ctx, name, **details)


def ablation_cam(ctx: MethodContext, params: AblationCamParams) -> MethodOutput:
    import torch

    from xaimed.methods.layers import find_layer, removable

    name = layer_name(ctx, params.layer)
    got = capture(ctx, name, backward=False)
    a, calls = got["activations"], int(got["calls"])
    reference = float(got["scores"].reshape(1, -1)[0, ctx.target])
    x = ctx.inputs.detach()
    channels = int(a.shape[1])
    # Which channels the batch in flight ablates (its first one), and the layer's calls so far in
    # this pass: a module run several times in one pass is ablated at its last call, the one
    # whose activations the map is made of.
    state = {"start": 0, "call": 0}

    def ablate(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        state["call"] += 1
        if state["call"] != calls:
            return None
        out = output.clone()
        rows = torch.arange(out.shape[0], device=out.device)
        out[rows, state["start"] + rows] = 0
        return out

    def copies(start: int, stop: int) -> torch.Tensor:
        state["start"], state["call"] = start, 0
        return x.expand(stop - start, *x.shape[1:]).contiguous()

    evaluator = _evaluator(ctx)
    hook = find_layer(ctx.user_network, name).register_forward_hook(ablate)
    with removable([hook]):
        scores = evaluator.scores(channels, copies, label="ablation_cam")
    drops = reference - scores.double()
    details = _details(
        evaluator, params.relu, channels=channels, unablated_score=reference,
        weights="target score drop when the channel is set to zero",
    )  # fmt: skip
    return cam_output(_weighted(drops, a, params.relu), ctx, name, **details)


# The methods of this module, in the order `xaimed methods` lists them.
METHODS = (
    MethodInfo(
        name="score_cam", family="cam",
        summary="Score-CAM: channels weighted by the score of the input masked with each.",
        params_model=ScoreCamParams, runner=score_cam,
        cost=fixed_cost("1 + one fwd per channel of the layer"), needs=(NEEDS_LAYER,),
        needs_module=True,
    ),
    MethodInfo(
        name="ablation_cam", family="cam",
        summary="Ablation-CAM: channels weighted by the score drop when each is set to zero.",
        params_model=AblationCamParams, runner=ablation_cam,
        cost=fixed_cost("1 + one fwd per channel of the layer"), needs=(NEEDS_LAYER,),
        needs_module=True,
    ),
)  # fmt: skip
