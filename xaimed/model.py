"""Load the model the user already has, safely, and run it for predictions.

Two sources here: a TorchScript file, or an architecture given by import path plus a state dict
read with ``torch.load(weights_only=True)``. A pickled whole model can run arbitrary code when
loaded and is refused unless the config sets ``model.allow_pickle``. Ensembles and the formats of
:mod:`xaimed.models` (nnU-Net v2 folders) are dispatched from :func:`load_model` too.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from xaimed.config import ModelSection
from xaimed.errors import ModelError
from xaimed.models.checkpoint import load_checkpoint

if TYPE_CHECKING:
    from xaimed.preprocess import Prepared
    from xaimed.volume import Volume


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode on its device, with what its outputs mean and where it came from."""

    module: torch.nn.Module
    is_script: bool
    file: Path
    sha256: str
    classes: list[str] | None
    output: str
    device: torch.device
    # Ensembles: the members, each a whole model (their mean output is ``module``'s).
    members: tuple[torch.nn.Module, ...] = ()
    # Formats with their own preprocessing (nnU-Net): replaces the config's preprocessing.
    prepare: Callable[[Volume], Prepared] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """Provenance for sidecars (a slice-wise model's slicing of the current case included)."""
        from xaimed.models.slicewise import SliceWise

        sliced = [m.sidecar_fields() for m in self.module.modules() if isinstance(m, SliceWise)]
        network = self.module.network if isinstance(self.module, SliceWise) else self.module
        described = {
            "file": str(self.file),
            "sha256": self.sha256,
            "kind": "torchscript" if self.is_script else "state_dict",
            "class": type(network).__name__,
            "output": self.output,
            "classes": self.classes,
            **self.details,
        }
        if sliced:
            described["slicewise"] = sliced[0] if len(sliced) == 1 else sliced
        return described


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _import_class(path: str, extra_paths: list[Path]) -> type:
    # The allow-list: only an nn.Module subclass, checked before it is called.
    from xaimed.architecture import import_architecture

    try:
        return import_architecture(path, extra_paths)
    except ValueError as exc:
        raise ModelError(f"model.architecture: {exc}.") from None


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    # Training frameworks save the weights in a few common wrappers; accept those without
    # asking the user to re-save (Lightning's "state_dict", DataParallel's "module." prefix).
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(
            f"model.weights {path}: holds a {type(obj).__name__}, not a state dict of tensors; "
            "save it with torch.save(model.state_dict(), path)."
        )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def _summarise_mismatch(exc: RuntimeError) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = "; ".join(lines[1:4]) if len(lines) > 1 else lines[0] if lines else str(exc)
    return detail[:600]


def _build_module(section: ModelSection) -> tuple[torch.nn.Module, Path]:
    path = section.weights
    if path is None:  # the config validator requires weights without torchscript
        raise RuntimeError("model.weights unset for an architecture; the config allowed it")
    loaded = load_checkpoint(path, allow_pickle=section.allow_pickle, key="model.weights")
    if isinstance(loaded, torch.nn.Module):
        return loaded, path
    if section.architecture is None:
        raise ModelError(
            f"model.weights {path}: holds a state dict; set model.architecture to its class."
        )
    cls = _import_class(section.architecture, section.python_path)
    try:
        module = cls(**section.kwargs)
    except Exception as exc:
        raise ModelError(
            f"model.architecture {section.architecture} cannot be built with model.kwargs "
            f"{section.kwargs} ({type(exc).__name__}: {exc})."
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"model.architecture {section.architecture} did not build an nn.Module.")
    state = _unwrap_state_dict(loaded, path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"model.weights {path} does not fit model.architecture {section.architecture} "
            f"with these kwargs: {_summarise_mismatch(exc)}."
        ) from None
    return module, path


def _load_torchscript(path: Path) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream but still what most users export.
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelError(
            f"model.torchscript {path}: not a loadable TorchScript file ({type(exc).__name__}); "
            "export it with torch.jit.save, or give architecture + weights."
        ) from None


def _without_inplace(module: torch.nn.Module) -> None:
    # In-place activations break the backward hooks of guided backprop and DeepLift; switching
    # them off changes no value.
    for sub in module.modules():
        if hasattr(sub, "inplace") and isinstance(sub.inplace, bool):
            sub.inplace = False


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for cuda without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"runtime.device is {name!r} but no CUDA device is available; use 'cpu'.")
    return torch.device(name)


def _frozen(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    module = module.to(device).eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def _load_ensemble(section: ModelSection, device: torch.device) -> LoadedModel:
    from xaimed.models.ensemble import EnsembleModule

    if section.ensemble is None:
        raise RuntimeError("_load_ensemble needs model.ensemble")
    shared = {"classes": section.classes, "output": section.output}
    loaded = [load_model(member.model_copy(update=shared), device) for member in section.ensemble]
    members = tuple(m.module for m in loaded)
    digest = hashlib.sha256("".join(m.sha256 for m in loaded).encode()).hexdigest()
    return LoadedModel(
        module=_frozen(EnsembleModule(list(members)), device),
        is_script=any(m.is_script for m in loaded),
        file=loaded[0].file,
        sha256=digest,
        classes=section.classes,
        output=section.output,
        device=device,
        members=members,
        details={"kind": "ensemble", "members": [m.describe() for m in loaded]},
    )


def _load_format(section: ModelSection, device: torch.device) -> LoadedModel:
    if section.nnunet is not None:
        from xaimed.models.nnunet import load_nnunet

        built = load_nnunet(section.nnunet, allow_pickle=section.allow_pickle, device=device)
    else:
        from xaimed.models.monai_bundle import load_bundle

        if section.monai_bundle is None:
            raise RuntimeError("a model format without its section")
        built = load_bundle(section.monai_bundle, allow_pickle=section.allow_pickle, device=device)
    for member in built.members:
        _without_inplace(member)
    return LoadedModel(
        module=_frozen(built.module, device),
        is_script=False,
        file=built.file,
        sha256=built.sha256,
        classes=built.classes or section.classes,
        output=built.output,
        device=device,
        members=built.members if len(built.members) > 1 else (),
        prepare=built.prepare,
        details=built.details,
    )


def load_model(section: ModelSection, device: torch.device) -> LoadedModel:
    """Load the configured model in eval mode on ``device``, with its file's SHA-256."""
    if section.ensemble is not None:
        return _load_ensemble(section, device)
    if section.nnunet is not None or section.monai_bundle is not None:
        return _load_format(section, device)
    if section.torchscript is not None:
        path = section.torchscript
        module = _load_torchscript(path)
        is_script = True
    else:
        module, path = _build_module(section)
        is_script = isinstance(module, torch.jit.ScriptModule)
        _without_inplace(module)
    module = _frozen(module, device)
    if section.slicewise is not None:
        from xaimed.models.slicewise import SliceWise

        spec = section.slicewise
        module = SliceWise(module, world_axis=spec.axis, context=spec.context, reduce=spec.reduce)
    return LoadedModel(
        module=module,
        is_script=is_script,
        file=path,
        sha256=sha256_file(path),
        classes=section.classes,
        output=section.output,
        device=device,
    )
