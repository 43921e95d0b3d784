"""Find the layers a method needs: by dotted module name, or ``auto``.

``auto`` is the feature map that enters the model's global pooling: the last convolutional
stage's output, after its activation. That is the layer CAM is defined on, and the usual choice
for Grad-CAM. It is found from one forward pass with hooks, so it works whatever the modules
are called.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from xaimed.errors import MethodError

GLOBAL_POOLS = (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip


@dataclass(frozen=True)
class LayerInfo:
    """One module as seen in a forward pass: its name, type and output shape."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    spatial: bool  # output has spatial axes (a feature map a CAM can be taken from)


@contextmanager
def removable(handles: list[torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
    """Remove every hook in ``handles`` when the block ends, on success or failure."""
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        handles.clear()


def _check_hookable(model: nn.Module) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise MethodError(
            "this needs the model's layers, which a TorchScript model does not expose to hooks; "
            "load the model as `architecture` + `weights` instead."
        )


def trace_layers(model: nn.Module, inputs: torch.Tensor) -> list[LayerInfo]:
    """Every named module in the order it ran, with its output shape, from one forward pass."""
    _check_hookable(model)
    seen: list[LayerInfo] = []
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
            spatial = shape is not None and len(shape) >= 3 and any(n > 1 for n in shape[2:])
            seen.append(LayerInfo(name, type(module).__name__, shape, spatial))

        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook_for(name)))
    with removable(handles), torch.no_grad():
        model(inputs)
    return seen


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The module called ``name``; a wrong name lists the candidates."""
    _check_hookable(model)
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    candidates = [n for n, m in modules.items() if n and isinstance(m, nn.modules.conv._ConvNd)]
    raise MethodError(
        f"params.layer {name!r} is not a module of the model; convolutional layers are: "
        f"{', '.join(candidates) or '(none)'} (`xaimed layers CONFIG` lists every layer)."
    )


def feature_layer(model: nn.Module, inputs: torch.Tensor) -> str:
    """Name of the module whose output enters the global pooling (the ``auto`` layer).

    Found by identity: the global pool's input tensor is the output of exactly one module. When
    the pooling is functional (no pooling module), the last module with a spatial output is
    taken instead.
    """
    _check_hookable(model)
    produced: dict[int, str] = {}
    pooled: list[str | None] = []
    last_spatial: list[str] = []
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def record(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor):
                produced[id(output)] = name
                if output.dim() >= 3 and any(n > 1 for n in output.shape[2:]):
                    last_spatial.append(name)

        return hook

    def pool_input(module: nn.Module, args: tuple) -> None:
        # Look the producer up now, while the tensor is alive: ids of freed tensors are reused.
        if args and isinstance(args[0], torch.Tensor) and not pooled:
            pooled.append(produced.get(id(args[0])))

    for name, module in model.named_modules():
        if not name:
            continue
        if isinstance(module, GLOBAL_POOLS):
            handles.append(module.register_forward_pre_hook(pool_input))
        # Containers return their last child's tensor: record leaves only so the name is the
        # most specific module that produced the features.
        if not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(record(name)))
    with removable(handles), torch.no_grad():
        model(inputs)
    if pooled and pooled[0] is not None:
        return pooled[0]
    if last_spatial:
        return last_spatial[-1]
    raise MethodError("the model has no layer with a spatial output; CAM methods do not apply.")
