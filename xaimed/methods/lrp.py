"""Layer-wise relevance propagation (LRP) for 3D CNNs: epsilon, gamma and alpha-beta rules.

Written here, not wrapped: Captum's LRP (0.9) has rules for Conv2d only, refuses Conv3d and
BatchNorm3d, and puts biases in its denominators, so relevance leaks into them and the input
relevance does not sum to the explained output. Zennit needs hand-written canonizers.

How: LRP is computed as "input times a modified gradient". Each convolution, linear and
batch-norm layer gets a forward hook that leaves the forward value untouched but reroutes its
backward pass through the rule's modified weights, scaled by ``output / z_rule``. The gradient
that reaches the input then equals relevance / input, and ``input * gradient`` is the relevance.
ReLU, pooling, residual additions and concatenations need no rule: their ordinary gradient
already passes relevance on unchanged. Biases take no relevance (z_rule has no bias term), so
the relevance of the input sums to the explained logit up to the epsilon stabiliser.

Every module without a rule that would change relevance (Sigmoid, Softmax, GELU, LayerNorm,
InstanceNorm, ...) is refused by name; functional operations in ``forward`` are checked with a
torch.fx trace where the model can be traced.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from xaimed.errors import MethodError
from xaimed.methods.params import LrpParams
from xaimed.methods.spec import MethodInfo, fixed_cost

if TYPE_CHECKING:
    import torch

    from xaimed.methods.context import MethodContext, MethodOutput


def _kinds() -> tuple[dict[type, str], tuple[type, ...]]:
    from torch import nn

    with_rule = {
        nn.Conv1d: "conv", nn.Conv2d: "conv", nn.Conv3d: "conv", nn.Linear: "linear",
        nn.BatchNorm1d: "batchnorm", nn.BatchNorm2d: "batchnorm", nn.BatchNorm3d: "batchnorm",
    }  # fmt: skip
    # Layers whose ordinary gradient already passes relevance on unchanged (piecewise linear
    # without bias, or selection).
    passthrough = (
        nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d,
        nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
        nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
        nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
        nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample,
    )  # fmt: skip
    return with_rule, passthrough


def _without_bias(module: torch.nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The layer's linear part with ``weight`` in place of its own, no bias."""
    import torch.nn.functional as F
    from torch import nn

    if isinstance(module, nn.modules.conv._ConvNd):
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.dim() - 2]
        return conv(x, weight, None, module.stride, module.padding, module.dilation, module.groups)
    if isinstance(module, nn.Linear):
        return F.linear(x, weight)
    # Batch norm in eval mode is x * a + c per channel; ``weight`` is a.
    return x * weight.reshape(1, -1, *([1] * (x.dim() - 2)))


def _weight_and_bias(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layer as ``weight`` and ``bias`` of an affine map (batch norm in eval mode included)."""
    import torch
    from torch import nn

    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        shift = -module.running_mean * scale
        if module.bias is not None:
            shift = shift + module.bias
        return scale, shift
    return module.weight, module.bias


def _stab(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z moved away from zero by eps, keeping its sign (sign(0) = +1)."""
    return z + eps * (2 * (z >= 0).to(z.dtype) - 1)


def _bias_share(
    module: torch.nn.Module, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """The bias, as a function of x whose input-times-gradient hands it to the inputs.

    Each output's bias is shared among its inputs in proportion to |x_i w_ij|. Its forward value
    is the bias (where any input contributes), so the layer's output is unchanged; its gradient
    makes ``x * grad`` carry the bias's relevance to the inputs instead of losing it, which
    keeps relevance conserved without the unstable bias-free denominators.
    """
    magnitude = _without_bias(module, x.abs(), w.abs())
    shape = (1, -1, *([1] * (x.dim() - 2))) if b.dim() == 1 and x.dim() > 2 else (1, -1)
    total = magnitude.detach()
    return b.reshape(shape) * magnitude / total.where(total > 0, total.new_ones(()))


def _rule_hook(kind: str, params: LrpParams):
    def hook(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        x = args[0]
        w, b = _weight_and_bias(module)
        rule = params.rule_for(kind)
        eps = params.epsilon
        if rule == "epsilon":
            z = _without_bias(module, x, w)
            if b is not None:
                z = z + _bias_share(module, x, w, b)
            # The denominator is the layer's own output: z equals it wherever an input
            # contributes, and where none does (all inputs exactly 0, the output is the bias)
            # the bias keeps its relevance instead of blowing up through 1 / eps.
            parts = [(1.0, z, out.detach())]
        else:
            wp, wn = w.clamp(min=0), w.clamp(max=0)
            xp, xn = x.clamp(min=0), x.clamp(max=0)
            z_pos = _without_bias(module, xp, wp) + _without_bias(module, xn, wn)
            z_neg = _without_bias(module, xp, wn) + _without_bias(module, xn, wp)
            if rule == "gamma":
                z_gamma = z_pos + z_neg + params.gamma * z_pos
                parts = [(1.0, z_gamma, z_gamma.detach())]
            else:
                parts = [
                    (params.alpha, z_pos, z_pos.detach()),
                    (-params.beta, z_neg, z_neg.detach()),
                ]
        routed = sum(c * z * (out / _stab(d, eps)).detach() for c, z, d in parts)
        # Forward value stays exactly ``out``; only the backward pass goes through ``routed``.
        return out.detach() + routed - routed.detach()

    return hook


_ALLOWED_FUNCTIONS = {
    operator.add,
    operator.iadd,
    operator.getitem,
    operator.mul,
    operator.truediv,
    getattr,
}
_ALLOWED_NAMES = {
    "add", "cat", "concat", "flatten", "relu", "relu_", "view", "reshape", "size", "permute",
    "contiguous", "squeeze", "unsqueeze", "mean", "max_pool3d", "max_pool2d", "avg_pool3d",
    "avg_pool2d", "adaptive_avg_pool3d", "adaptive_avg_pool2d", "interpolate", "dim", "float",
    "to", "leaky_relu", "dropout", "chunk", "split", "transpose", "type_as",
}  # fmt: skip


def _functional_problems(model: torch.nn.Module) -> tuple[list[str], bool]:
    """Functional operations LRP has no rule for, from a torch.fx trace (and whether it traced)."""
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:
        return [], False
    problems = []
    for node in graph.nodes:
        if node.op not in ("call_function", "call_method"):
            continue
        target = node.target
        name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        if target in _ALLOWED_FUNCTIONS or name in _ALLOWED_NAMES:
            continue
        if name in ("mul", "truediv") or target in (operator.mul, operator.truediv):
            continue
        problems.append(f"{name} (in forward, node {node.name})")
    return problems, True


@contextmanager
def _folded_batch_norms(network: torch.nn.Module) -> Iterator[list[str]]:
    """Fold every batch norm that directly follows a convolution or linear layer into it, for
    the duration of the block; the model is restored exactly afterwards, on failure too.

    Why: a batch norm on its own is an element-wise layer whose shift can only be handed to its
    single input, however small that input is, which makes relevance explode through 1 / x in
    deep networks. Folded into the preceding layer, the shift is shared among all that layer's
    inputs. Pairs are found on a torch.fx trace; an untraceable model is left as it is. The
    folding happens in place (not on a copy) so that wrappers around the model see it too.
    """
    import torch
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(network).graph
    except Exception:
        yield []
        return
    modules = dict(network.named_modules())
    pairs = []
    for node in graph.nodes:
        norm = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            continue
        source = node.args[0] if node.args else None
        layer = modules.get(source.target) if isinstance(source, torch.fx.Node) else None
        if (
            source is not None
            and source.op == "call_module"
            and len(source.users) == 1
            and isinstance(layer, torch.nn.modules.conv._ConvNd | torch.nn.Linear)
            and getattr(layer, "groups", 1) == 1
        ):
            pairs.append((source.target, node.target))
    saved = []
    try:
        with torch.no_grad():
            for layer_name, norm_name in pairs:
                layer, norm = modules[layer_name], modules[norm_name]
                scale, shift = _weight_and_bias(norm)
                saved.append((layer, layer.weight, layer.bias, norm_name, norm))
                shape = (-1,) + (1,) * (layer.weight.dim() - 1)
                bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
                layer.weight = torch.nn.Parameter(layer.weight * scale.reshape(shape), False)
                layer.bias = torch.nn.Parameter(bias * scale + shift, False)
                _set_module(network, norm_name, torch.nn.Identity())
        yield [f"{n} into {c}" for c, n in pairs]
    finally:
        for layer, weight, bias, norm_name, norm in reversed(saved):
            layer.weight, layer.bias = weight, bias
            _set_module(network, norm_name, norm)


def _set_module(network: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = network.get_submodule(parent_name) if parent_name else network
    setattr(parent, child, module)


def _install(network: torch.nn.Module, params: LrpParams) -> list[Any]:
    with_rule, passthrough = _kinds()
    handles, unsupported = [], []
    for name, module in network.named_modules():
        if any(True for _ in module.children()):
            continue  # containers: their children are checked
        kind = with_rule.get(type(module))
        if kind is not None:
            if kind == "conv" and getattr(module, "padding_mode", "zeros") != "zeros":
                unsupported.append(
                    f"{name} ({type(module).__name__}, padding_mode={module.padding_mode})"
                )
                continue
            handles.append(module.register_forward_hook(_rule_hook(kind, params)))
        elif not isinstance(module, passthrough) and name:
            unsupported.append(f"{name} ({type(module).__name__})")
    if unsupported:
        for handle in handles:
            handle.remove()
        raise MethodError(
            f"lrp has no rule for the layer(s) {', '.join(unsupported)}; supported are "
            "convolutions, linear, batch norm, ReLU, pooling, dropout, residual additions and "
            "concatenations. Use a gradient method for this model."
        )
    return handles


def lrp(ctx: MethodContext, params: LrpParams) -> MethodOutput:
    import torch
    from captum.attr import InputXGradient

    from xaimed.methods.context import MethodOutput
    from xaimed.methods.layers import removable

    network = ctx.user_network
    if isinstance(network, torch.jit.ScriptModule):
        raise MethodError(
            "lrp hooks the model's layers, which a TorchScript model does not allow; load the "
            "model as `architecture` + `weights` instead."
        )
    problems, traced = _functional_problems(network)
    if problems:
        raise MethodError(
            f"lrp has no rule for the operation(s) {', '.join(problems)}; it would give a "
            "wrong map, so it is refused. Use a gradient method for this model."
        )
    with _folded_batch_norms(network) as folded:
        handles = _install(network, params)
        loose = [
            name
            for name, m in network.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            and bool(_weight_and_bias(m)[1].abs().max() > 0)
        ]
        with removable(handles):
            attribution = InputXGradient(ctx.model).attribute(ctx.inputs, target=ctx.target)
    details = {
        "rules": {k: params.rule_for(k) for k in ("conv", "linear", "batchnorm")},
        "bias": "takes no relevance (conserving variant)",
        "functional_ops_checked": traced,
        "batch_norms_folded": folded,
    }
    if loose:
        details["warnings"] = [
            f"lrp: batch norm(s) {', '.join(loose)} follow no convolution and could not be "
            "folded; their shift is handed to single activations, so relevance may not be "
            "conserved exactly."
        ]
    return MethodOutput(attribution.detach(), details)


# The methods of this module, in the order `xaimed methods` lists them.
METHODS = (
    MethodInfo(
        name="lrp", family="decomposition",
        summary="Layer-wise relevance propagation (epsilon, gamma, alpha-beta; composite per "
        "type).",
        params_model=LrpParams, runner=lrp, cost=fixed_cost("1 fwd + 1 bwd"),
        needs=("nn.Module of supported layers",), needs_module=True,
    ),
)  # fmt: skip
