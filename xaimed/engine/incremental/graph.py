"""The network as a graph of ops, each with the rule that says how a changed box moves
through it.

``trace`` traces the network with torch.fx; ``reference_graph`` runs it once on the unoccluded
input and keeps every node's output (the cache); ``classify`` gives every node that depends on
the input its rule, knowing the shapes from the cache:

- ``SlidingRule``: convolutions and max / average pooling (any kernel, stride, padding,
  dilation, groups): the box grows by the kernel, shrinks by the stride; the op runs with
  padding 0 on a region whose out-of-map part is filled as the op pads.
- ``ElementwiseRule``: batch norm in eval mode, activations, dropout in eval, identity,
  arithmetic with scalars or per-channel constants, residual additions, concatenation along
  channels: the box of the result is the union of the operands' boxes.
- ``UpsampleRule``: nearest or (tri)linear upsampling by integer factors.
- ``GlobalMeanRule``: global average pooling, updated from the box alone.
- ``ShapeRule``: ``x.size()``, ``x.shape``, ``x.dim()``.
- ``NoRule``: anything else, with the reason; the runner computes it on whole maps.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from xaimed.engine.incremental.boxes import Sliding, Triple


class NotIncremental(Exception):
    """The network cannot be computed incrementally at all; the message says why."""


@dataclass(frozen=True)
class SlidingRule:
    op: Sliding
    pad_hi: Triple
    pad_value: float
    run: Callable[[torch.Tensor], torch.Tensor]  # the op with padding 0


@dataclass(frozen=True)
class TransposedRule:
    """Transposed convolution: input voxel ``i`` writes the outputs ``i*s - p + d*j``,
    ``j < k``; ``run`` is the op with padding 0 (its output starts at ``-p``)."""

    op: Sliding
    run: Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ElementwiseRule:
    pass


@dataclass(frozen=True)
class UpsampleRule:
    scale: Triple
    mode: str


@dataclass(frozen=True)
class GlobalMeanRule:
    pass


@dataclass(frozen=True)
class ShapeRule:
    pass


@dataclass(frozen=True)
class FrozenNormRule:
    """Instance / group norm with the statistics of the unoccluded pass (the opt-in
    approximation): per channel an affine map, so elementwise."""

    run: Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NoRule:
    reason: str


Rule = (
    SlidingRule
    | TransposedRule
    | ElementwiseRule
    | UpsampleRule
    | GlobalMeanRule
    | ShapeRule
    | FrozenNormRule
    | NoRule
)
_PER_SAMPLE_NORM = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm)

_POINTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Identity,
)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

_POINTWISE_FUNCTIONS = {
    torch.relu,
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.softplus,
    torch.sigmoid,
    F.sigmoid,
    torch.tanh,
    F.tanh,
    torch.abs,
    torch.neg,
    torch.exp,
    torch.clamp,
    operator.neg,
}
_DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout}
_BINARY_FUNCTIONS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.maximum,
    torch.minimum,
}
_IN_PLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv}
_ELEMENTWISE_METHODS = {
    "relu",
    "sigmoid",
    "tanh",
    "abs",
    "neg",
    "exp",
    "clamp",
    "clamp_min",
    "contiguous",
    "float",
    "double",
    "half",
    "bfloat16",
    "add",
    "sub",
    "mul",
    "div",
    "relu_",
    "add_",
    "sub_",
    "mul_",
    "div_",
    "clamp_",
}
_CONCAT = {torch.cat, torch.concat, torch.concatenate}


@dataclass
class Graph:
    """The traced network, its cached outputs on the unoccluded input, and every node's rule."""

    module: fx.GraphModule
    nodes: list[fx.Node]
    input_node: fx.Node
    cache: dict[fx.Node, Any]
    depends: set[fx.Node]
    rules: dict[fx.Node, Rule]
    freeze_norm: bool = False

    def describe(self, node: fx.Node) -> str:
        """The op behind a node as a user would name it (module class or function name)."""
        if node.op == "call_module":
            return type(self.module.get_submodule(str(node.target))).__name__
        target = node.target
        return str(getattr(target, "__name__", target))


def trace(network: nn.Module) -> fx.GraphModule:
    """Record ``network``'s forward as an fx graph (raises NotIncremental when it cannot)."""
    if isinstance(network, torch.jit.ScriptModule):
        raise NotIncremental("a TorchScript model has no traceable Python forward")
    try:
        return fx.symbolic_trace(network)
    except Exception as exc:  # fx raises many kinds (TraceError, TypeError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotIncremental(f"torch.fx cannot trace the model's forward ({first[:120]})") from None


def is_in_place(module: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` overwrites its first argument."""
    if node.op == "call_module":
        return bool(getattr(module.get_submodule(str(node.target)), "inplace", False))
    if node.kwargs.get("inplace", False):
        return True
    if node.op == "call_function":
        return node.target in _IN_PLACE_FUNCTIONS
    if node.op == "call_method":
        name = str(node.target)
        return name.endswith("_") and not name.endswith("__")
    return False


def call(module: fx.GraphModule, node: fx.Node, args: tuple, kwargs: dict) -> Any:
    """Run one node's op on concrete arguments; in-place ops work on a copy of their input, so
    that cached maps are never overwritten (``reference_graph`` refuses graphs where that
    could differ from the network's own behaviour)."""
    if is_in_place(module, node) and args and isinstance(args[0], torch.Tensor):
        args = (args[0].clone(), *args[1:])
    if node.op == "call_module":
        return module.get_submodule(str(node.target))(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)  # type: ignore[operator]
    if node.op == "call_method":
        return getattr(args[0], str(node.target))(*args[1:], **kwargs)
    if node.op == "get_attr":
        value: Any = module
        for part in str(node.target).split("."):
            value = getattr(value, part)
        return value
    raise NotIncremental(f"{node.name}: graph nodes of kind {node.op!r} cannot be run alone")


def reference_graph(
    module: fx.GraphModule,
    x: torch.Tensor,
    *,
    maps: bool = False,
    freeze_norm: bool = False,
    tap: Callable[[fx.Node, Any], Any] | None = None,
    after: Callable[[Any], None] | None = None,
) -> Graph:
    """Run the traced network on ``x`` and keep every node's output and input dependence.

    The network must return one row of class scores, or with ``maps`` a segmentation (one
    map per label of the input's size). With ``tap`` the pass runs with autograd and each
    node's output goes through ``tap(node, output)`` (which must not change its value);
    ``after(output)`` then takes what derivatives it needs before the cache is detached."""
    nodes = list(module.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if not placeholders or any(n.args == () for n in placeholders[1:]):
        raise NotIncremental("the model's forward takes more than one required input")
    input_node = placeholders[0]
    for node in nodes:
        target = node.args[0] if node.args else None
        if is_in_place(module, node) and isinstance(target, fx.Node) and len(target.users) > 1:
            raise NotIncremental(f"{node.name} overwrites in place a tensor other ops read too")
    cache: dict[fx.Node, Any] = {}
    depends: set[fx.Node] = {input_node}
    output: Any = None
    with torch.no_grad() if tap is None else torch.enable_grad():
        for node in nodes:
            if node.op == "placeholder":
                cache[node] = x if node is input_node else node.args[0]
                continue
            args = fx.node.map_arg(node.args, lambda n: cache[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: cache[n])
            if node.op == "output":
                output = args[0]
                cache[node] = output
            else:
                cache[node] = call(module, node, args, kwargs)  # type: ignore[arg-type]
                if tap is not None:
                    cache[node] = tap(node, cache[node])
            if any(n in depends for n in node.all_input_nodes):
                depends.add(node)
        if after is not None:
            after(output)
    if tap is not None:
        cache = {n: v.detach() if isinstance(v, torch.Tensor) else v for n, v in cache.items()}
        output = output.detach() if isinstance(output, torch.Tensor) else output
    if maps:
        if not _is_map(output) or tuple(output.shape[2:]) != tuple(x.shape[2:]):
            raise NotIncremental("the model does not return one map per label of the input")
    elif not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[0] != 1:
        raise NotIncremental("the model does not return one row of class scores")
    graph = Graph(module, nodes, input_node, cache, depends, {}, freeze_norm)
    graph.rules = {n: classify(graph, n) for n in nodes if n in depends and n.op != "output"}
    return graph


# ---------------------------------------------------------------- rules


def _triple(value: Any) -> Triple:
    if isinstance(value, int):
        return (value, value, value)
    values = tuple(int(v) for v in value)
    return values if len(values) == 3 else (values[0],) * 3  # type: ignore[return-value]


def _is_map(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim == 5


def _sliding(
    graph: Graph, node: fx.Node, geometry: Sliding, pad_value: float, run: Callable
) -> Rule:
    """Sliding rule, with the far-side padding that makes every output's region fit."""
    source, out = graph.cache[node.all_input_nodes[0]], graph.cache[node]
    if not (_is_map(source) and _is_map(out)):
        return NoRule("not a 3D feature map")
    pad_hi = []
    for a in range(3):
        n, m = source.shape[2 + a], out.shape[2 + a]
        need = (m - 1) * geometry.stride[a] + geometry.span[a] - n - geometry.pad[a]
        pad_hi.append(max(0, need))
    return SlidingRule(geometry, tuple(pad_hi), pad_value, run)  # type: ignore[arg-type]


def _conv_rule(graph: Graph, node: fx.Node, conv: nn.Conv3d) -> Rule:
    if conv.padding_mode != "zeros":
        return NoRule(f"padding_mode {conv.padding_mode}")
    kernel, stride, dilation = (_triple(v) for v in (conv.kernel_size, conv.stride, conv.dilation))
    if isinstance(conv.padding, str):
        # 'same' pads (d*(k-1)) // 2 before; 'valid' pads nothing.
        pad = tuple(
            (d * (k - 1)) // 2 if conv.padding == "same" else 0
            for k, d in zip(kernel, dilation, strict=True)
        )
    else:
        pad = _triple(conv.padding)

    def run(t: torch.Tensor) -> torch.Tensor:
        return F.conv3d(t, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)

    return _sliding(graph, node, Sliding(kernel, stride, dilation, pad), 0.0, run)  # type: ignore[arg-type]


def _transposed_rule(conv: nn.ConvTranspose3d) -> Rule:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return NoRule(f"transposed convolution with padding {conv.padding!r}")
    kernel, stride, dilation = (_triple(v) for v in (conv.kernel_size, conv.stride, conv.dilation))
    pad = _triple(conv.padding)

    def run(t: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose3d(
            t, conv.weight, conv.bias, conv.stride, 0, 0, conv.groups, conv.dilation
        )

    return TransposedRule(Sliding(kernel, stride, dilation, pad), run)  # type: ignore[arg-type]


def _pool_rule(graph: Graph, node: fx.Node, pool: nn.Module) -> Rule:
    kernel = _triple(pool.kernel_size)
    stride = _triple(pool.stride if pool.stride is not None else pool.kernel_size)
    pad = _triple(pool.padding)
    if isinstance(pool, nn.MaxPool3d):
        if pool.return_indices:
            return NoRule("max pooling that returns indices")
        dilation = _triple(pool.dilation)

        def run_max(t: torch.Tensor) -> torch.Tensor:
            return F.max_pool3d(t, kernel, stride, 0, dilation)

        geometry = Sliding(kernel, stride, dilation, pad)
        return _sliding(graph, node, geometry, float("-inf"), run_max)
    if not isinstance(pool, nn.AvgPool3d):
        return NoRule(f"no changed-box rule for {type(pool).__name__}")
    if any(pad) and not pool.count_include_pad:
        return NoRule("average pooling that excludes padding from the count")

    def run_avg(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(t, kernel, stride, 0, False, True, pool.divisor_override)

    rule = _sliding(graph, node, Sliding(kernel, stride, (1, 1, 1), pad), 0.0, run_avg)
    if isinstance(rule, SlidingRule) and any(h > p for h, p in zip(rule.pad_hi, pad, strict=True)):
        return NoRule("average pooling in ceil mode past the border")
    return rule


def _constant_ok(value: Any) -> bool:
    """A constant operand that broadcasts the same over every voxel (scalar or per channel)."""
    if isinstance(value, int | float | bool) or value is None:
        return True
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 or (value.ndim >= 3 and tuple(value.shape[-3:]) == (1, 1, 1))
    return False


def _operands_ok(graph: Graph, node: fx.Node) -> str | None:
    """Why the node's operands do not allow the elementwise rule (None when they do)."""
    for arg in node.all_input_nodes:
        value = graph.cache[arg]
        if arg in graph.depends:
            if not _is_map(value) or tuple(value.shape[2:]) != tuple(graph.cache[node].shape[2:]):
                return "operands of different spatial shapes"
        elif not _constant_ok(value):
            return "a constant operand that varies over the voxels"
    return None


def _upsample_rule(graph: Graph, node: fx.Node, mode: str, align_corners: Any) -> Rule:
    source, out = graph.cache[node.all_input_nodes[0]], graph.cache[node]
    if mode not in ("nearest", "trilinear", "linear"):
        return NoRule(f"interpolation mode {mode}")
    if mode != "nearest" and align_corners:
        return NoRule("interpolation with align_corners=True")
    scale = []
    for a in range(3):
        n, m = source.shape[2 + a], out.shape[2 + a]
        if m % n:
            return NoRule("upsampling by a non-integer factor")
        scale.append(m // n)
    return UpsampleRule(tuple(scale), "nearest" if mode == "nearest" else "trilinear")  # type: ignore[arg-type]


def _is_global_mean(graph: Graph, node: fx.Node) -> bool:
    args = node.args
    if node.op == "call_module":
        pool = graph.module.get_submodule(str(node.target))
        return isinstance(pool, nn.AdaptiveAvgPool3d) and _triple(pool.output_size) == (1, 1, 1)
    if node.target is F.adaptive_avg_pool3d:
        size = args[1] if len(args) > 1 else node.kwargs.get("output_size")
        return size is not None and _triple(size) == (1, 1, 1)
    if node.target in (torch.mean, "mean"):
        dim = args[1] if len(args) > 1 else node.kwargs.get("dim")
        if dim is None or isinstance(dim, int):
            return False
        return sorted(int(d) % 5 for d in dim) == [2, 3, 4] and "dtype" not in node.kwargs
    return False


def classify(graph: Graph, node: fx.Node) -> Rule:
    """The rule for one input-dependent node."""
    if node.op == "placeholder":
        return ElementwiseRule()
    inputs = [n for n in node.all_input_nodes if n in graph.depends]
    if len(inputs) == 0 or not all(_is_map(graph.cache[n]) for n in inputs):
        return NoRule("no 3D feature map among its operands")
    if node.op == "call_method" and node.target in ("size", "dim"):
        return ShapeRule()
    if node.op == "call_function" and node.target is builtins.getattr:
        return ShapeRule() if node.args[1] in ("shape", "ndim") else NoRule("attribute access")
    if _is_global_mean(graph, node):
        return GlobalMeanRule()
    if not _is_map(graph.cache[node]):
        return NoRule("its output is not a 3D feature map")
    if node.op == "call_module":
        return _module_rule(graph, node, graph.module.get_submodule(str(node.target)))
    if node.op == "call_function":
        return _function_rule(graph, node)
    if node.op == "call_method" and node.target in _ELEMENTWISE_METHODS:
        reason = _operands_ok(graph, node)
        return NoRule(reason) if reason else ElementwiseRule()
    return NoRule("no changed-box rule for this op")


def _module_rule(graph: Graph, node: fx.Node, module: nn.Module) -> Rule:
    if isinstance(module, nn.Conv3d):
        return _conv_rule(graph, node, module)
    if isinstance(module, nn.ConvTranspose3d):
        return _transposed_rule(module)
    if isinstance(module, nn.MaxPool3d | nn.AvgPool3d):
        return _pool_rule(graph, node, module)
    if isinstance(module, _BATCH_NORM):
        if module.training or module.running_mean is None:
            return NoRule("batch norm that uses the batch's statistics (training mode)")
        return ElementwiseRule()
    if isinstance(module, _PER_SAMPLE_NORM):
        if not graph.freeze_norm:
            return NoRule(
                "normalisation with per-sample statistics (approximate: "
                "{freeze_norm_statistics: true} freezes them)"
            )
        return _frozen_norm(graph.cache[node.all_input_nodes[0]], module)
    if isinstance(module, _DROPOUT):
        return NoRule("dropout in training mode") if module.training else ElementwiseRule()
    if isinstance(module, _POINTWISE_MODULES):
        return ElementwiseRule()
    if isinstance(module, nn.Upsample):
        return _upsample_rule(graph, node, module.mode, module.align_corners)
    return NoRule("no changed-box rule for this module")


def _function_rule(graph: Graph, node: fx.Node) -> Rule:
    target = node.target
    if target in _DROPOUT_FUNCTIONS:
        training = node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)
        return NoRule("dropout in training mode") if training else ElementwiseRule()
    if target in _POINTWISE_FUNCTIONS or target in _BINARY_FUNCTIONS:
        reason = _operands_ok(graph, node)
        return NoRule(reason) if reason else ElementwiseRule()
    if target in _CONCAT:
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if int(dim) % 5 != 1:
            return NoRule("concatenation along another axis than channels")
        reason = _operands_ok(graph, node)
        return NoRule(reason) if reason else ElementwiseRule()
    if target is F.interpolate:
        mode = node.kwargs.get("mode", node.args[3] if len(node.args) > 3 else "nearest")
        corners = node.kwargs.get("align_corners", node.args[4] if len(node.args) > 4 else None)
        return _upsample_rule(graph, node, str(mode), corners)
    return NoRule("no changed-box rule for this function")


def is_per_sample_norm(module: nn.Module) -> bool:
    """Instance or group norm: statistics of each sample's own maps."""
    return isinstance(module, _PER_SAMPLE_NORM)


def group_statistics(cached: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (biased) variance (G,) float64 of a norm's input (1, C, ...) per group of
    channels, computed in float32 as the norm itself does."""
    var, mean = torch.var_mean(cached.float().reshape(groups, -1), dim=-1, correction=0)
    return mean.double(), var.double()


def _frozen_norm(cached: torch.Tensor, norm: nn.Module) -> Rule:
    """The norm as an affine map per channel, with the statistics of its cached input."""
    if isinstance(norm, nn.InstanceNorm1d | nn.InstanceNorm2d | nn.InstanceNorm3d):
        if norm.track_running_stats and not norm.training:
            return ElementwiseRule()  # running statistics: already the same for every input
        groups = int(cached.shape[1])
    else:
        groups = int(norm.num_groups)  # type: ignore[attr-defined]
    channels = int(cached.shape[1])
    mean, var = group_statistics(cached, groups)
    mean = mean[None].repeat_interleave(channels // groups, dim=1)
    var = var[None].repeat_interleave(channels // groups, dim=1)
    shape = (1, channels, 1, 1, 1)
    scale = (var + float(norm.eps)).rsqrt().reshape(shape)  # type: ignore[arg-type]
    shift = (-mean).reshape(shape) * scale
    weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
    if weight is not None:
        scale = scale * weight.detach().double().reshape(shape)
        shift = shift * weight.detach().double().reshape(shape)
    if bias is not None:
        shift = shift + bias.detach().double().reshape(shape)
    scale, shift = scale.to(cached.dtype), shift.to(cached.dtype)

    def run(t: torch.Tensor) -> torch.Tensor:
        return t * scale.to(t.dtype) + shift.to(t.dtype)

    return FrozenNormRule(run)
