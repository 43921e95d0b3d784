"""What a model format's loader hands back to :func:`xaimed.model.load_model`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from xaimed.preprocess import Prepared
    from xaimed.volume import Volume


@dataclass(frozen=True)
class BuiltModel:
    """A format's model: the explained module, its members, and its own preprocessing.

    ``prepare`` replaces the config's ``preprocessing`` section for formats that bring their
    own (nnU-Net's plans); its Prepared sends maps back to the source grid.
    """

    module: torch.nn.Module
    members: tuple[torch.nn.Module, ...]
    file: Path
    sha256: str
    classes: list[str] | None
    output: str
    prepare: Callable[[Volume], Prepared] | None = None
    details: dict[str, Any] = field(default_factory=dict)
