"""The method registry: every attribution method is a runner registered under a unique name.

A runner has one contract: ``run(context, params) -> attribution``, the attribution shaped like
``context.inputs`` (batch of one, channels, spatial axes), raw and signed; a runner with more to
report returns a ``MethodOutput`` whose details go into the sidecar. Families register themselves
when their module is imported; importing a family must not import torch, so that
``xaimed validate`` and ``xaimed methods`` stay fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    import torch

    from xaimed.methods.context import MethodContext, MethodOutput

# Modules that register methods; later families (CAM, perturbation, LRP) are added here.
FAMILY_MODULES = (
    "xaimed.methods.gradient",
    "xaimed.methods.cam",
    "xaimed.methods.lrp",
    "xaimed.methods.perturbation",
)


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows of a method."""

    name: str
    family: str
    summary: str
    params_model: type[BaseModel]
    run: Callable[[MethodContext, Any], torch.Tensor | MethodOutput]
    cost: Callable[[Any], str]
    needs: tuple[str, ...] = ()
    # Methods that need forward hooks on nn.Module submodules cannot run on TorchScript.
    needs_module: bool = False
    # Set for methods that failed published sanity checks; shown wherever their maps go.
    warning: str | None = None


_REGISTRY: dict[str, MethodInfo] = {}
_loaded = False


def register(info: MethodInfo) -> MethodInfo:
    """Add a method; a second method under the same name is a programming error."""
    if info.name in _REGISTRY:
        raise ValueError(f"method {info.name!r} is registered twice")
    _REGISTRY[info.name] = info
    return info


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in FAMILY_MODULES:
            importlib.import_module(module)


def find(name: str) -> MethodInfo | None:
    """The method registered as ``name``, or None."""
    _load()
    return _REGISTRY.get(name)


def names() -> list[str]:
    """All registered method names, in registration order."""
    _load()
    return list(_REGISTRY)


def all_methods() -> list[MethodInfo]:
    """All registered methods, in registration order."""
    _load()
    return list(_REGISTRY.values())
