"""A 2D network as the equal 3D network of depth 1, for the incremental engine.

The engine's box arithmetic and rules are written for 3D maps (N, C, I, J, K). A 2D layer on a
plane is the 3D layer whose kernel, stride and padding along the depth axis are 1, 1 and 0, on
a map of depth 1: same weights, same values. Lifting the network's layers therefore lets every
rule of the engine, and its exactness, serve 2D models unchanged instead of a second copy of
each rule. The lifted network is a copy; the user's network is not touched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from xaimed.engine.incremental.graph import NotIncremental


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value  # type: ignore[misc]
    return (int(first), int(second))


def _conv(m: nn.Conv2d) -> nn.Module:
    padding = m.padding if isinstance(m.padding, str) else (*_pair(m.padding), 0)
    out = nn.Conv3d(
        m.in_channels, m.out_channels, (*_pair(m.kernel_size), 1), stride=(*_pair(m.stride), 1),
        padding=padding, dilation=(*_pair(m.dilation), 1), groups=m.groups,
        bias=m.bias is not None, padding_mode=m.padding_mode,
    )  # fmt: skip
    _copy_weights(out, m)
    return out


def _conv_transpose(m: nn.ConvTranspose2d) -> nn.Module:
    out = nn.ConvTranspose3d(
        m.in_channels, m.out_channels, (*_pair(m.kernel_size), 1), stride=(*_pair(m.stride), 1),
        padding=(*_pair(m.padding), 0), output_padding=(*_pair(m.output_padding), 0),
        groups=m.groups, bias=m.bias is not None, dilation=(*_pair(m.dilation), 1),
    )  # fmt: skip
    _copy_weights(out, m)
    return out


def _copy_weights(out: nn.Module, m: nn.Module) -> None:
    with torch.no_grad():
        out.weight.copy_(m.weight[..., None])  # type: ignore[operator, index]
        if m.bias is not None:  # type: ignore[union-attr]
            out.bias.copy_(m.bias)  # type: ignore[union-attr, arg-type]
    out.to(m.weight.device)  # type: ignore[union-attr, arg-type]


def _max_pool(m: nn.MaxPool2d) -> nn.Module:
    stride = m.stride if m.stride is not None else m.kernel_size
    return nn.MaxPool3d(
        (*_pair(m.kernel_size), 1), (*_pair(stride), 1), (*_pair(m.padding), 0),
        (*_pair(m.dilation), 1), return_indices=m.return_indices, ceil_mode=m.ceil_mode,
    )  # fmt: skip


def _avg_pool(m: nn.AvgPool2d) -> nn.Module:
    stride = m.stride if m.stride is not None else m.kernel_size
    return nn.AvgPool3d(
        (*_pair(m.kernel_size), 1), (*_pair(stride), 1), (*_pair(m.padding), 0),
        ceil_mode=m.ceil_mode, count_include_pad=m.count_include_pad,
        divisor_override=m.divisor_override,
    )  # fmt: skip


def _adaptive(kind: type[nn.Module]) -> Callable[[nn.Module], nn.Module]:
    def lift(m: nn.Module) -> nn.Module:
        size = m.output_size  # type: ignore[attr-defined]
        pair = (size, size) if size is None or isinstance(size, int) else tuple(size)
        return kind((*pair, 1))

    return lift


def _batch_norm(m: nn.BatchNorm2d) -> nn.Module:
    out = nn.BatchNorm3d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    out.load_state_dict(m.state_dict())
    return out.to(next(m.buffers(), torch.empty(0)).device).train(m.training)


def _instance_norm(m: nn.InstanceNorm2d) -> nn.Module:
    out = nn.InstanceNorm3d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    out.load_state_dict(m.state_dict())
    device = next(m.parameters(), next(m.buffers(), torch.empty(0))).device
    return out.to(device).train(m.training)


def _upsample(m: nn.Upsample) -> nn.Module:
    modes = {"bilinear": "trilinear", "nearest": "nearest", "nearest-exact": "nearest-exact"}
    if m.mode not in modes:
        raise NotIncremental(f"a 2D Upsample in mode {m.mode!r} has no 3D equal")
    size = None if m.size is None else (*_pair(m.size), 1)
    scale = None if m.scale_factor is None else (*_scale_pair(m.scale_factor), 1.0)
    return nn.Upsample(
        size=size, scale_factor=scale, mode=modes[m.mode], align_corners=m.align_corners
    )


def _scale_pair(value: object) -> tuple[float, float]:
    if isinstance(value, int | float):
        return (float(value), float(value))
    first, second = value  # type: ignore[misc]
    return (float(first), float(second))


_LIFTS: dict[type[nn.Module], Callable[[nn.Module], nn.Module]] = {
    nn.Conv2d: _conv,  # type: ignore[dict-item]
    nn.ConvTranspose2d: _conv_transpose,  # type: ignore[dict-item]
    nn.MaxPool2d: _max_pool,  # type: ignore[dict-item]
    nn.AvgPool2d: _avg_pool,  # type: ignore[dict-item]
    nn.AdaptiveAvgPool2d: _adaptive(nn.AdaptiveAvgPool3d),
    nn.AdaptiveMaxPool2d: _adaptive(nn.AdaptiveMaxPool3d),
    nn.BatchNorm2d: _batch_norm,  # type: ignore[dict-item]
    nn.InstanceNorm2d: _instance_norm,  # type: ignore[dict-item]
    nn.Dropout2d: lambda m: nn.Dropout3d(m.p),  # type: ignore[attr-defined]
    nn.Upsample: _upsample,  # type: ignore[dict-item]
}


def lift_to_3d(network: nn.Module, planes: torch.Tensor) -> nn.Module:
    """A copy of the 2D ``network`` that takes ``planes`` (N, C, X, Y, 1) and gives the same
    values, with a depth axis of 1 on feature maps and map outputs.

    Raises NotIncremental when a layer has no 3D equal, or when the copy does not reproduce the
    network's output on ``planes`` (a functional 2D operation in ``forward``, for instance).
    """
    lifted = copy.deepcopy(network)
    for name, module in list(lifted.named_modules()):
        lift = _LIFTS.get(type(module))
        if lift is None or not name:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = lifted.get_submodule(parent_name) if parent_name else lifted
        setattr(parent, child, lift(module))
    with torch.no_grad():
        try:
            got = lifted(planes)
        except Exception as exc:
            raise NotIncremental(
                f"the 2D network does not run as its 3D equal ({type(exc).__name__})"
            ) from None
        expected = network(planes[..., 0])
    if isinstance(expected, torch.Tensor) and expected.dim() == 4:
        expected = expected[..., None]
    if not isinstance(got, torch.Tensor) or got.shape != getattr(expected, "shape", None):
        raise NotIncremental("the 2D network's 3D equal gives outputs of another shape")
    scale = max(1.0, float(expected.abs().max()))
    if float((got - expected).abs().max()) > 1e-4 * scale:
        raise NotIncremental("the 2D network's 3D equal does not reproduce its output")
    return lifted
