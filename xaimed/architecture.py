"""The model import allow-list: ``model.architecture`` may only name an ``nn.Module`` subclass.

A config names the network's class by import path, and xaimed calls it with ``model.kwargs``.
Without a check, any callable would do (``os:system`` with ``{command: ...}`` runs a command), so
the path must resolve to a class derived from ``torch.nn.Module``, checked before anything is
called, at load (``xaimed validate`` too) and again when the model is built. Importing the module
still runs its top-level code: a config and its ``python_path`` folders are trusted code (README,
"Safety").
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def import_architecture(path: str, python_path: list[Path]) -> type:
    """The ``nn.Module`` subclass that ``path`` ('package.module:Class') names.

    Raises ValueError with a sentence (without the ``model.architecture`` key; callers add it)
    when the module cannot be imported, the attribute is missing or is not such a class.
    """
    import torch

    module_name, _, attr = path.partition(":")
    for folder in python_path:
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import module {module_name!r} ({exc}); install it or add its folder to "
            "model.python_path"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
        kind = "a class" if isinstance(obj, type) else f"a {type(obj).__name__}"
        raise ValueError(
            f"{path!r} is {kind}, not a torch.nn.Module subclass; xaimed builds only network "
            "classes (e.g. monai.networks.nets:DenseNet121), so that a config cannot call "
            "anything else"
        )
    return obj
