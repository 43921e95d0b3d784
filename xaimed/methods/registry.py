"""The method registry: every attribution method's specification, under a unique name.

A method is one module: its runner, its parameter model (a pydantic model; shared ones are in
:mod:`xaimed.methods.params`) and, at the module's end, ``METHODS``: its
:class:`~xaimed.methods.spec.MethodInfo` (family, summary, needs, cost). Registering it is one
line in ``MODULES`` below. Method modules import torch and Captum only inside their runners, so
the config validates method names and parameters against this registry at load without either,
and ``xaimed methods`` prints it.

A runner has one contract: ``run(context, params) -> attribution``, the attribution shaped like
``context.inputs`` (batch of one, channels, spatial axes), raw and signed; a runner with more to
report returns a ``MethodOutput`` whose details go into the sidecar.
"""

from __future__ import annotations

import importlib

from xaimed.methods.spec import MethodInfo

# The method modules, in the order `xaimed methods` lists their methods.
MODULES = (
    "xaimed.methods.gradient",
    "xaimed.methods.cam",
    "xaimed.methods.cam_variants",
    "xaimed.methods.cam_scores",
    "xaimed.methods.lrp",
    "xaimed.methods.perturbation",
)

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


def _register_modules() -> None:
    for module in MODULES:
        for info in importlib.import_module(module).METHODS:
            register(info)


_register_modules()
